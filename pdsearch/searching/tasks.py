"""What the search runs on the cluster besides trials: Ray tasks that stream their progress, and the trainable.

The baseline, the sensitivity profile and loss-aware's paths are each measured once per
run, as a Ray task with a trial's resources (so a GPU cluster trains them on a GPU), and
cached in RUN_DIR/baseline/; while one runs, its reports reach the driver's progress lines.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import ray
from ray import tune

from pdsearch.config import SearchConfig, parse_config
from pdsearch.policy import SensitivityProfile
from pdsearch.searching.progress import StartProgress
from pdsearch.trial.baseline import Baseline, build_baseline, cached_baseline, save_baseline
from pdsearch.trial.loss_path import cached_paths, compute_paths, needs_paths, save_paths
from pdsearch.trial.profile import cached_profile, compute_profile, needs_profile, save_profile
from pdsearch.trial.training import default_device, use_threads
from pdsearch.trial.trial import run_trial


def trainable(config: dict[str, Any], settings: dict[str, Any], baseline: Baseline,
              profile: SensitivityProfile | None, latency_table: dict[str, Any] | None = None,
              loss_paths: dict[str, Any] | None = None) -> None:
    """One trial in a Tune worker: reports per epoch (for the scheduler), then the final metrics."""
    cfg = parse_config(settings)  # its plugins first: the names they register
    use_threads(cfg)
    metrics = run_trial(config, cfg, baseline, default_device(), profile, report=tune.report,
                        latency_table=latency_table, loss_paths=loss_paths)
    metrics["rates"] = json.dumps(metrics["rates"])
    tune.report(metrics)


_END = object()


def _reporting(fn: Callable[..., Any], *args: Any) -> Iterator[tuple[str, Any]]:
    """A Ray streaming task: ``fn(*args, report=...)`` in a thread; yields its reports as they come, then its result."""
    reports: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fn(*args, report=reports.put)
        except BaseException as exc:  # raised again in the task, so Ray hands it to the driver
            outcome["error"] = exc
        finally:
            reports.put(_END)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while (item := reports.get()) is not _END:
        yield "report", item
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    yield "result", outcome["result"]


def run_task(cfg: SearchConfig, fn: Callable[..., Any], *args: Any, progress: StartProgress | None) -> Any:
    """``fn(cfg, *args)`` as a Ray task with a trial's resources; its reports go to ``progress`` while it runs."""
    task = ray.remote(num_cpus=cfg.resources.cpu, num_gpus=cfg.resources.gpu, num_returns="streaming")(_reporting)
    stream = task.remote(fn, cfg, *args)
    while True:
        ready, _ = ray.wait([stream], timeout=1.0)
        if progress is not None:
            progress.tick()
        if not ready:
            continue
        kind, value = ray.get(next(stream))
        if kind == "result":
            return value
        if progress is not None:
            progress.update(value)


def baseline(cfg: SearchConfig, run_dir: Path, progress: StartProgress | None) -> Baseline:
    """The trained baseline: cached, or trained once as a Ray task."""
    cached = cached_baseline(cfg, run_dir)
    if cached is not None:
        return cached
    trained = run_task(cfg, build_baseline, progress=progress)
    if trained.skipped_keys:
        print(f"pdsearch: note: {cfg.baseline.checkpoint} has a classifier for other classes "
              f"({', '.join(trained.skipped_keys)}): it was re-initialised and fine-tuned with the rest "
              f"for {cfg.baseline.epochs} epochs (baseline.epochs)", file=sys.stderr)
    save_baseline(trained, run_dir)
    return trained


def profile(cfg: SearchConfig, run_dir: Path, baseline: Baseline,
            progress: StartProgress | None) -> SensitivityProfile | None:
    """The baseline's sensitivity profile, where the space needs one: cached, or measured once as a Ray task."""
    if not needs_profile(cfg):
        return None
    measured = cached_profile(cfg, run_dir)
    if measured is None:
        measured = run_task(cfg, compute_profile, baseline, progress=progress)
        save_profile(cfg, measured, run_dir)
    return measured


def loss_paths(cfg: SearchConfig, run_dir: Path, baseline: Baseline, table: dict[str, Any] | None,
               progress: StartProgress | None) -> dict[str, Any] | None:
    """Loss-aware allocation's greedy paths, where the space has it: cached, or measured once as a Ray task."""
    if not needs_paths(cfg):
        return None
    paths = cached_paths(cfg, run_dir)
    if paths is None:
        paths = run_task(cfg, compute_paths, baseline, table, progress=progress)
        save_paths(cfg, paths, run_dir)
    return paths
