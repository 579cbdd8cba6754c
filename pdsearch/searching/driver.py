"""The search: Ray Tune runs the trials, an Optuna multi-objective sampler proposes them.

The space goes to OptunaSearch itself with metric and mode as lists: a space passed
through Tune's ``param_space`` together with a TuneConfig metric would silently make
the study single-objective. Scheduling is FIFO, or MO-ASHA (mo_asha.py): Tune's own
early-stopping schedulers track one metric.

Here: the preflight, the baseline (and the sensitivity profile where the space needs
one) as Ray tasks that report their progress, and the orchestration. The space is
pdsearch.space, the samplers and schedulers registries are samplers.py and
schedulers.py, the Optuna glue searcher.py, trials.csv recording.py, the Ray connection
cluster.py.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import pickletools
import queue
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
import ray
from ray import tune

from pdsearch.config import SearchConfig, load_config, parse_config, with_overrides
from pdsearch.cost.latency_table import LatencyTable
from pdsearch.errors import Interrupted, PdsearchError
from pdsearch.catalog.objectives import directions, metrics
from pdsearch.planning import Planner
from pdsearch.policy import SensitivityProfile
from pdsearch.pruning import check_prunable
from pdsearch.registry import resolve
from pdsearch.searching.tracking import sessions as tracker_sessions
from pdsearch.run.directory import (
    CONFIG_YAML,
    LATENCY_TABLE,
    MODEL_JSON,
    PARETO_CSV,
    TRIALS_CSV,
    TrialTable,
    load_run,
    study_storage,
    written,
)
from pdsearch.run.lock import run_lock
from pdsearch.searching.cluster import concurrency, connect, probe_address, reuse_actors
from pdsearch.searching.outage import OUTAGE, OutageWatch, StudyUnreachable, reopen_search
from pdsearch.searching.progress import StartProgress, trial_dirname, trial_name, tune_reporter
from pdsearch.searching.recording import TrialRecorder
from pdsearch.catalog.schedulers import SCHEDULERS
from pdsearch.searching.searcher import PolicySearcher
from pdsearch.space import SearchSpace
from pdsearch.trial.baseline import build_baseline, cached_baseline, load_checkpoint, model_and_data, save_baseline
from pdsearch.trial.loss_path import cached_paths, compute_paths, needs_paths, save_paths
from pdsearch.trial.profile import cached_profile, compute_profile, needs_profile, save_profile
from pdsearch.trial.training import default_device, use_threads
from pdsearch.trial.trial import run_trial

# Ray Tune's ProgressReporter interface (progress.py); its newer output ignores custom reporters.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune saves the experiment state (what `resume` restores) at its own pace ("auto": at most 5% of
# the time, every 10 s or more); a fixed period would cost more and more as trials accumulate.
# The study, not that state, says what already ran.
# SIGINT is handled here (with SIGTERM), then handed to Tune's graceful stop (its SIGUSR1 handler).
os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def preflight(space: SearchSpace, run_dir: Path | None = None) -> dict[str, Any]:
    """Build the model, load the data and plan one policy on the driver, in seconds.

    Configuration errors surface here, before Ray starts, not as N failed trials: an
    unreachable budget, a space the sampler cannot take, a model that cannot be pruned.
    Returns what model.json records: the model's prunable layers and base cost.
    """
    cfg = space.cfg
    space.sampler()
    model, data = model_and_data(cfg)
    if cfg.search.storage is not None:  # a database server: reachable, with these credentials, before Ray starts
        study_storage(cfg, run_dir or Path("."))
    table = target_table(cfg, data.input_size, run_dir)
    planner = Planner(model, input_size=data.input_size, in_channels=data.in_channels, latency_table=table)
    planner.check(space.policy(space.first()), settings=cfg.space.settings())
    check_prunable(planner.structure)
    if cfg.baseline.checkpoint:
        if distils(cfg) and not Path(cfg.baseline.checkpoint).is_file():
            raise PdsearchError(f"finetune.distill distils from the baseline, and baseline.checkpoint "
                                f"{cfg.baseline.checkpoint} does not exist")
        load_checkpoint(model, cfg.baseline.checkpoint, cfg.baseline.trust_checkpoint)
    base = planner.cost_model.base
    return {
        "name": cfg.model.name, "input_size": data.input_size, "in_channels": data.in_channels,
        "num_classes": data.num_classes, "flops": base.flops, "params": base.params,
        "layers": [{"name": g.name, "position": round(g.position, 4), "channels": g.channels} for g in planner.groups],
    }


def target_table(cfg: SearchConfig, data_input_size: int, run_dir: Path | None = None) -> LatencyTable | None:
    """latency.table (the run's copy once it has one), refused when built for another input size, batch size,
    runtime or thread count."""
    lat = cfg.latency
    if lat.table is None:
        return None
    copy = None if run_dir is None else run_dir / LATENCY_TABLE
    path = copy if copy is not None and copy.is_file() else Path(lat.table)
    table = LatencyTable.load(path)
    table.check({"input_size": lat.input_size or data_input_size, "batch_size": lat.batch_sizes[0],
                 "runtime": lat.runtime, "threads": lat.threads}, f"latency table {str(path)!r}")
    return table


def distils(cfg: SearchConfig) -> bool:
    """Whether any trial of the search fine-tunes with the baseline as its teacher."""
    return any(w > 0 for w in (cfg.space.distill or [cfg.finetune.distill.weight]))


def _trainable(config: dict[str, Any], settings: dict[str, Any], baseline: dict[str, Any],
               profile: SensitivityProfile | None, latency_table: dict[str, Any] | None = None,
               loss_paths: dict[str, Any] | None = None) -> None:
    cfg = parse_config(settings)  # its plugins first: the names they register
    use_threads(cfg)
    device = default_device()
    metrics = run_trial(config, cfg, baseline, device, profile, report=tune.report,  # per epoch, for the scheduler
                        latency_table=latency_table, loss_paths=loss_paths)
    metrics["rates"] = json.dumps(metrics["rates"])
    tune.report(metrics)


def _refuse_a_second_search(run_dir: Path) -> None:
    if (run_dir / TRIALS_CSV).exists():
        raise PdsearchError(f"run directory {run_dir} already holds a search: continue it with "
                            f"pdsearch resume {run_dir}, or start afresh with a new --run-dir")


def _prepare_run_dir(cfg: SearchConfig, run_dir: Path, model_info: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_YAML).write_text(cfg.to_yaml())
    (run_dir / MODEL_JSON).write_text(json.dumps(model_info, indent=2))
    if cfg.latency.table is not None and not (run_dir / LATENCY_TABLE).exists():
        shutil.copyfile(cfg.latency.table, run_dir / LATENCY_TABLE)


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


_END = object()


def _run_task(cfg: SearchConfig, fn: Callable[..., Any], *args: Any, progress: StartProgress | None) -> Any:
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


def _baseline(cfg: SearchConfig, run_dir: Path, progress: StartProgress | None) -> dict[str, Any]:
    cached = cached_baseline(cfg, run_dir)
    if cached is not None:
        return cached
    baseline = _run_task(cfg, build_baseline, progress=progress)
    if baseline.get("skipped_keys"):
        print(f"pdsearch: note: {cfg.baseline.checkpoint} has a classifier for other classes "
              f"({', '.join(baseline['skipped_keys'])}): it was re-initialised and fine-tuned with the rest "
              f"for {cfg.baseline.epochs} epochs (baseline.epochs)", file=sys.stderr)
    save_baseline(baseline, run_dir)
    return baseline


def _profile(cfg: SearchConfig, run_dir: Path, baseline: dict[str, Any],
             progress: StartProgress | None) -> SensitivityProfile | None:
    """The baseline's sensitivity profile, where the space needs one: cached, or measured once as a Ray task."""
    if not needs_profile(cfg):
        return None
    profile = cached_profile(cfg, run_dir)
    if profile is None:
        profile = _run_task(cfg, compute_profile, baseline, progress=progress)
        save_profile(cfg, profile, run_dir)
    return profile


def _loss_paths(cfg: SearchConfig, run_dir: Path, baseline: dict[str, Any], table: dict[str, Any] | None,
                progress: StartProgress | None) -> dict[str, Any] | None:
    """Loss-aware allocation's greedy paths, where the space has it: cached, or measured once as a Ray task."""
    if not needs_paths(cfg):
        return None
    paths = cached_paths(cfg, run_dir)
    if paths is None:
        paths = _run_task(cfg, compute_paths, baseline, table, progress=progress)
        save_paths(cfg, paths, run_dir)
    return paths


def tune_path(cfg: SearchConfig, run_dir: Path) -> str:
    """Where Ray Tune keeps the experiment (trial folders, the state ``resume`` restores)."""
    return cfg.search.tune_storage or str(run_dir / "tune")


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """SIGINT and SIGTERM stop scheduling gracefully: running trials are saved by Tune as it does.

    Yields the signals received. A second signal, or one before Tune runs, stops at once.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def stop(signum: int, frame) -> None:
        first = not received
        received.append(signum)
        tune_listens = callable(signal.getsignal(signal.SIGUSR1))  # Tune's stop handler, while it runs
        if first and tune_listens:
            signal.raise_signal(signal.SIGUSR1)
        else:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_search(cfg: SearchConfig, run_dir: Path, address: str | None = None, resume: bool = False,
               progress: str = "normal") -> dict[str, Any]:
    """The search in ``run_dir``, whose lock the caller holds (``search`` and ``resume`` take it first)."""
    run_dir = run_dir.resolve()
    if not resume:
        _refuse_a_second_search(run_dir)
    space = SearchSpace(cfg)
    # progress.py says what matters, in fewer lines; outage.py what a database going away does
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    model_info = preflight(space, run_dir)
    reporter = tune_reporter(space, run_dir, model_info, progress)
    began = getattr(reporter, "origin", time.time())  # one clock for what is printed before and during trials
    experiment = f"{tune_path(cfg, run_dir).rstrip('/')}/{cfg.name}"
    if resume and not tune.Tuner.can_restore(experiment):
        raise PdsearchError(f"{run_dir} has no Ray Tune state to resume at {experiment} "
                            "(the search stopped before its first checkpoint): start a new search")
    if resume:
        _refuse_state_of_an_earlier_version(run_dir, Path(experiment))
        reopen_search(Path(experiment))
    probe_address(address)
    started, received, trackers = False, [], []
    try:
        started = connect(address)
        if not resume:  # written once Ray is there: a failed start leaves the folder as it was
            _prepare_run_dir(cfg, run_dir, model_info)
        with _stop_signals() as received:  # after ray.init, which installs a SIGTERM handler of its own
            start = time.time()
            starting = StartProgress(cfg.name, origin=began) if progress != "quiet" else None
            trackers = tracker_sessions(cfg, run_dir)
            baseline = _baseline(cfg, run_dir, starting)
            _refuse_a_weak_baseline(cfg, baseline, model_info["num_classes"])
            profile = _profile(cfg, run_dir, baseline, starting)
            table = LatencyTable.load(run_dir / LATENCY_TABLE).to_dict() if cfg.latency.table else None
            loss_paths = _loss_paths(cfg, run_dir, baseline, table, starting)
            trainable = tune.with_resources(
                tune.with_parameters(_trainable, settings=cfg.model_dump(mode="json", by_alias=True),
                                     baseline=baseline, profile=profile, latency_table=table, loss_paths=loss_paths),
                {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
            )
            if resume:  # same experiment, searcher and study: finished trials stay, unfinished ones rerun
                tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=False)
                if tuner._local_tuner is not None:  # (None through Ray Client, which keeps the saved reporter)
                    # the run config comes back from Tune's state; this session's --quiet/--verbose applies
                    tuner._local_tuner.get_run_config().progress_reporter = reporter
            else:
                tuner = _new_tuner(space, run_dir, trainable, model_info, profile, reporter, trackers)
            OUTAGE.reset(cfg.search.storage_timeout)
            tuner.fit()
    except KeyboardInterrupt:
        received = received or ([] if OUTAGE.expired else [signal.SIGINT])
    finally:
        if started:
            ray.shutdown()
    TrialTable(run_dir / TRIALS_CSV).compact()
    if OUTAGE.expired:
        raise StudyUnreachable(f"the study database stayed unreachable for {cfg.search.storage_timeout:g} s "
                               f"(search.storage_timeout): {_interrupted(space, run_dir)} once it is back")
    if received:
        raise Interrupted(_interrupted(space, run_dir), received[0])
    summary = summarize(run_dir, baseline, seconds=time.time() - start)
    for session in trackers:
        session.finish(run_dir, summary)
    return summary


CHANCE_MARGIN = 5.0  # points above chance (100 / classes) a baseline must reach to be searched


def _refuse_a_weak_baseline(cfg: SearchConfig, baseline: dict[str, Any], num_classes: int) -> None:
    """A baseline that learnt (almost) nothing gives a front of noise: stop before any trial, unless told not to."""
    chance, accuracy = 100.0 / num_classes, float(baseline["val_accuracy"])
    if accuracy < chance + CHANCE_MARGIN and not cfg.baseline.allow_weak:
        raise PdsearchError(
            f"the baseline learnt almost nothing: validation accuracy {accuracy:.1f}% against {chance:.1f}% for "
            f"chance ({num_classes} classes; below chance + {CHANCE_MARGIN:g} points is not searched): train it "
            "longer (baseline.epochs, baseline.lr), load a trained baseline.checkpoint, or set "
            "baseline.allow_weak: true to search it anyway")


def stale_modules(experiment: Path) -> list[str]:
    """pdsearch modules that Ray Tune's pickled state names but this version no longer has."""
    names: set[str] = set()
    for path in experiment.glob("*.pkl"):
        for op, arg, _ in pickletools.genops(path.read_bytes()):
            if isinstance(arg, str):  # (STACK_GLOBAL's module names are strings; GLOBAL's are "module name")
                name = arg.split(" ")[0]
                if name.startswith("pdsearch.") and name.replace(".", "").replace("_", "").isalnum():
                    names.add(name)
    return sorted(name for name in names if importlib.util.find_spec(name) is None)


def _refuse_state_of_an_earlier_version(run_dir: Path, experiment: Path) -> None:
    stale = stale_modules(experiment)
    if stale:
        raise PdsearchError(
            f"{run_dir} was written by an earlier pdsearch (its Ray Tune state names {stale[0]}, which this version "
            f"does not have): report, select and dashboard still read it; to search on, start a new search with "
            f"another --run-dir")


def _interrupted(space: SearchSpace, run_dir: Path) -> str:
    trials = load_run(run_dir).trials if (run_dir / TRIALS_CSV).is_file() else []
    done = int((trials["status"] != "infeasible").sum()) if len(trials) else 0
    return (f"interrupted after {done} of {space.size()} trials; "
            f"continue with: pdsearch resume {run_dir}")


def _new_tuner(space: SearchSpace, run_dir: Path, trainable, model_info: dict[str, Any],
               profile: SensitivityProfile | None, reporter: tune.ProgressReporter, trackers: list) -> tune.Tuner:
    cfg = space.cfg
    objectives = cfg.search.objectives
    searcher = PolicySearcher(
        space=space, metric=metrics(objectives), mode=directions(objectives), sampler=space.sampler(),
        study_name=cfg.search.study_name, storage=study_storage(cfg, run_dir),
        model_info=model_info, run_dir=run_dir, profile=profile,
    )
    run_config = tune.RunConfig(
        name=cfg.name, storage_path=tune_path(cfg, run_dir),
        callbacks=[TrialRecorder(run_dir), OutageWatch(), *(t.callback() for t in trackers)],
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        progress_reporter=reporter, verbose=1,
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=space.size(),
                                    scheduler=resolve(SCHEDULERS[cfg.search.scheduler].build)(cfg),
                                    max_concurrent_trials=concurrency(cfg), reuse_actors=reuse_actors(),
                                    trial_name_creator=functools.partial(trial_name, space),
                                    trial_dirname_creator=functools.partial(trial_dirname, space)),
        run_config=run_config,
    )


def summarize(run_dir: Path, baseline: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
    run = load_run(run_dir)
    front = run.front()
    front.to_csv(run_dir / PARETO_CSV, index=False)
    return {
        "run_dir": str(run_dir), "trials": run.trials, "pareto": front.reset_index(drop=True), "seconds": seconds,
        "baseline": {k: v for k, v in baseline.items() if k != "state_dict"}, "written": written(run.cfg, run_dir),
    }


def search(
    config: str | Path | SearchConfig,
    run_dir: str | Path | None = None,
    num_trials: int | None = None,
    address: str | None = None,
    progress: str = "normal",
) -> dict[str, Any]:
    """Run a search; returns the trials and Pareto front (pandas) and the baseline's accuracy.

    ``progress``: quiet (nothing until the end), normal (a compact block, and a line per trial
    in small sweeps) or verbose (Ray Tune's full table).
    """
    overrides = {"search.num_trials": num_trials}
    if isinstance(config, SearchConfig):
        cfg = parse_config(with_overrides(config.model_dump(mode="json", by_alias=True), overrides))
    else:
        cfg = load_config(config, overrides)
    folder = Path(run_dir or cfg.run_dir or Path("runs") / cfg.name)
    with run_lock(folder, "pdsearch search"):  # before anything in the folder is read
        return run_search(cfg, folder, address=address, progress=progress)


def resume(run_dir: str | Path, address: str | None = None, progress: str = "normal") -> dict[str, Any]:
    """Continue a search whose driver died (same Tune experiment, same Optuna study)."""
    run_dir = Path(run_dir)
    with run_lock(run_dir, "pdsearch resume", create=False):  # before anything in it is read
        if not (run_dir / CONFIG_YAML).is_file():
            raise PdsearchError(f"{run_dir} is not a pdsearch run directory (no {CONFIG_YAML})")
        return run_search(load_config(run_dir / CONFIG_YAML), run_dir, address=address, resume=True,
                          progress=progress)
