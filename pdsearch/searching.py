"""The search: Ray Tune runs the trials, an Optuna multi-objective sampler proposes them.

The space goes to OptunaSearch itself with metric and mode as lists: a space passed
through Tune's ``param_space`` together with a TuneConfig metric would silently make
the study single-objective. Scheduling is FIFO, or MO-ASHA (scheduling.py): Tune's own
early-stopping schedulers track one metric.

Here: the preflight, the baseline (and the sensitivity profile where the space needs
one), and the orchestration. The space and samplers are in space.py, the Optuna glue
in searcher.py, trials.csv in recording.py, the Ray connection in cluster.py.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import ray
import torch
from ray import tune

from pdsearch.baseline import build_baseline, cached_baseline, load_checkpoint, model_and_data, save_baseline
from pdsearch.cluster import concurrency, connect, probe_address
from pdsearch.config import SearchConfig, load_config, parse_config, with_overrides
from pdsearch.errors import Interrupted, PdsearchError
from pdsearch.locking import run_lock
from pdsearch.objectives import directions, metrics
from pdsearch.planning import Planner
from pdsearch.policy import SensitivityProfile
from pdsearch.progress import trial_dirname, trial_name, tune_reporter
from pdsearch.recording import TrialRecorder
from pdsearch.scheduling import SCHEDULERS
from pdsearch.rundir import CONFIG_YAML, MODEL_JSON, PARETO_CSV, TRIALS_CSV, TrialTable, load_run, storage_url
from pdsearch.searcher import PolicySearcher
from pdsearch.profiling import cached_profile, compute_profile, needs_profile, save_profile
from pdsearch.space import SearchSpace
from pdsearch.trial import run_trial

# Ray Tune's ProgressReporter interface (progress.py); its newer output ignores custom reporters.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune saves the experiment state (what `resume` restores) at its own pace ("auto": at most 5% of
# the time, every 10 s or more); a fixed period would cost more and more as trials accumulate.
# The study, not that state, says what already ran.
# SIGINT is handled here (with SIGTERM), then handed to Tune's graceful stop (its SIGUSR1 handler).
os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def preflight(cfg: SearchConfig) -> dict[str, Any]:
    """Build the model, load the data and plan one policy on the driver, in seconds.

    Configuration errors surface here, before Ray starts, not as N failed trials: an
    unreachable budget, a space the sampler cannot take, a model that cannot be pruned.
    Returns what model.json records: the model's prunable layers and base cost.
    """
    space = SearchSpace(cfg)
    space.sampler()
    model, data = model_and_data(cfg)
    planner = Planner(model, input_size=data.input_size, in_channels=data.in_channels)
    planner.check(space.policy(space.first()), settings=cfg.space.settings())
    if cfg.baseline.checkpoint:
        load_checkpoint(model, cfg.baseline.checkpoint, cfg.baseline.trust_checkpoint)
    base = planner.cost_model.base
    return {
        "name": cfg.model.name, "input_size": data.input_size, "in_channels": data.in_channels,
        "num_classes": data.num_classes, "flops": base.flops, "params": base.params,
        "layers": [{"name": g.name, "position": round(g.position, 4), "channels": g.channels} for g in planner.groups],
    }


def _trainable(config: dict[str, Any], settings: dict[str, Any], baseline: dict[str, Any],
               profile: SensitivityProfile | None) -> None:
    cfg = SearchConfig.model_validate(settings)
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Ray hides GPUs it did not assign
    metrics = run_trial(config, cfg, baseline, device, profile, report=tune.report)  # per epoch, for the scheduler
    metrics["rates"] = json.dumps(metrics["rates"])
    tune.report(metrics)


def _prepare_run_dir(cfg: SearchConfig, run_dir: Path, model_info: dict[str, Any]) -> None:
    if (run_dir / TRIALS_CSV).exists():
        raise PdsearchError(f"run directory {run_dir} already holds a search: choose a new --run-dir")
    (run_dir / CONFIG_YAML).write_text(cfg.to_yaml())
    (run_dir / MODEL_JSON).write_text(json.dumps(model_info, indent=2))


def _baseline(cfg: SearchConfig, run_dir: Path) -> dict[str, Any]:
    cached = cached_baseline(cfg, run_dir)
    if cached is not None:
        return cached
    task = ray.remote(num_cpus=cfg.resources.cpu, num_gpus=cfg.resources.gpu)(build_baseline)
    baseline = ray.get(task.remote(cfg))
    save_baseline(baseline, run_dir)
    return baseline


def _profile(cfg: SearchConfig, run_dir: Path, baseline: dict[str, Any]) -> SensitivityProfile | None:
    """The baseline's sensitivity profile, where the space needs one: cached, or measured once as a Ray task."""
    if not needs_profile(cfg):
        return None
    profile = cached_profile(cfg, run_dir)
    if profile is None:
        task = ray.remote(num_cpus=cfg.resources.cpu, num_gpus=cfg.resources.gpu)(compute_profile)
        profile = ray.get(task.remote(cfg, baseline))
        save_profile(cfg, profile, run_dir)
    return profile


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
    run_dir = run_dir.resolve()
    model_info = preflight(cfg)
    reporter = tune_reporter(cfg, run_dir, model_info, progress)
    experiment = f"{tune_path(cfg, run_dir).rstrip('/')}/{cfg.name}"
    if resume and not tune.Tuner.can_restore(experiment):
        raise PdsearchError(f"{run_dir} has no Ray Tune state to resume at {experiment} "
                            "(the search stopped before its first checkpoint): start a new search")
    probe_address(address)
    with run_lock(run_dir, "pdsearch resume" if resume else "pdsearch search"):
        if not resume:
            _prepare_run_dir(cfg, run_dir, model_info)
        started, received = False, []
        try:
            started = connect(address)
            with _stop_signals() as received:  # after ray.init, which installs a SIGTERM handler of its own
                start = time.time()
                baseline = _baseline(cfg, run_dir)
                profile = _profile(cfg, run_dir, baseline)
                trainable = tune.with_resources(
                    tune.with_parameters(_trainable, settings=cfg.model_dump(mode="json", by_alias=True),
                                         baseline=baseline, profile=profile),
                    {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
                )
                if resume:  # same experiment, searcher and study: finished trials stay, unfinished ones rerun
                    tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=False)
                    if tuner._local_tuner is not None:  # (None through Ray Client, which keeps the saved reporter)
                        # the run config comes back from Tune's state; this session's --quiet/--verbose applies
                        tuner._local_tuner.get_run_config().progress_reporter = reporter
                else:
                    tuner = _new_tuner(cfg, run_dir, trainable, model_info, profile, reporter)
                tuner.fit()
        except KeyboardInterrupt:
            received = received or [signal.SIGINT]
        finally:
            if started:
                ray.shutdown()
        TrialTable(run_dir / TRIALS_CSV).compact()
        if received:
            raise Interrupted(_interrupted(cfg, run_dir), received[0])
        return summarize(run_dir, baseline, seconds=time.time() - start)


def _interrupted(cfg: SearchConfig, run_dir: Path) -> str:
    trials = load_run(run_dir).trials if (run_dir / TRIALS_CSV).is_file() else []
    done = int((trials["status"] != "infeasible").sum()) if len(trials) else 0
    return (f"interrupted after {done} of {SearchSpace(cfg).size()} trials; "
            f"continue with: pdsearch resume {run_dir}")


def _new_tuner(cfg: SearchConfig, run_dir: Path, trainable, model_info: dict[str, Any],
               profile: SensitivityProfile | None, reporter: tune.ProgressReporter) -> tune.Tuner:
    space = SearchSpace(cfg)
    objectives = cfg.search.objectives
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress.py says what matters, in fewer lines
    searcher = PolicySearcher(
        space=space, metric=metrics(objectives), mode=directions(objectives), sampler=space.sampler(),
        study_name=cfg.search.study_name, storage=optuna.storages.RDBStorage(storage_url(cfg, run_dir)), cfg=cfg,
        model_info=model_info, run_dir=run_dir, profile=profile,
    )
    run_config = tune.RunConfig(
        name=cfg.name, storage_path=tune_path(cfg, run_dir), callbacks=[TrialRecorder(run_dir)],
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        progress_reporter=reporter, verbose=1,
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=space.size(),
                                    scheduler=SCHEDULERS[cfg.search.scheduler](cfg),
                                    max_concurrent_trials=concurrency(cfg), reuse_actors=True,
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
        "baseline": {k: v for k, v in baseline.items() if k != "state_dict"},
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
    return run_search(cfg, folder, address=address, progress=progress)


def resume(run_dir: str | Path, address: str | None = None, progress: str = "normal") -> dict[str, Any]:
    """Continue a search whose driver died (same Tune experiment, same Optuna study)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_YAML).is_file():
        raise PdsearchError(f"{run_dir} is not a pdsearch run directory (no {CONFIG_YAML})")
    return run_search(load_config(run_dir / CONFIG_YAML), run_dir, address=address, resume=True, progress=progress)
