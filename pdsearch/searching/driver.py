"""The search: Ray Tune runs the trials, an Optuna multi-objective sampler proposes them.

The space goes to OptunaSearch itself with metric and mode as lists: a space passed
through Tune's ``param_space`` together with a TuneConfig metric would silently make
the study single-objective. Scheduling is FIFO (fifo.py), or MO-ASHA (mo_asha.py): Tune's
own early-stopping schedulers track one metric.

Here only the orchestration and the public verbs: the checks before Ray starts are
preflight.py, what runs as Ray tasks tasks.py, the Optuna glue searcher.py, trials.csv
recording.py, the Ray connection cluster.py, the result run/summary.py.
"""
from __future__ import annotations

import contextlib
import functools
import json
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import ray
from ray import tune

from pdsearch.catalog.objectives import directions, metrics
from pdsearch.catalog.schedulers import SCHEDULERS
from pdsearch.config import SearchConfig, load_config, parse_config, with_overrides
from pdsearch.cost.latency_table import LatencyTable
from pdsearch.errors import Interrupted, PdsearchError
from pdsearch.files import local_folder
from pdsearch.policy import SensitivityProfile
from pdsearch.registry import resolve
from pdsearch.run.directory import (
    CONFIG_YAML,
    LATENCY_TABLE,
    MODEL_JSON,
    TRIALS_CSV,
    TrialTable,
    load_run,
    study_storage,
)
from pdsearch.run.lock import run_lock
from pdsearch.run.summary import SearchResult, summarize
from pdsearch.searching import tasks
from pdsearch.searching.cluster import concurrency, connect, probe_address, reuse_actors
from pdsearch.searching.outage import OUTAGE, OutageWatch, StudyUnreachable, reopen_search
from pdsearch.searching.preflight import (
    preflight,
    refuse_a_second_search,
    refuse_a_weak_baseline,
    refuse_state_of_an_earlier_version,
)
from pdsearch.searching.progress import StartProgress, trial_dirname, trial_name, tune_reporter
from pdsearch.searching.recording import TrialRecorder
from pdsearch.searching.searcher import PolicySearcher
from pdsearch.searching.tracking import sessions as tracker_sessions
from pdsearch.space import SearchSpace


def _prepare_run_dir(cfg: SearchConfig, run_dir: Path, model_info: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_YAML).write_text(cfg.to_yaml())
    (run_dir / MODEL_JSON).write_text(json.dumps(model_info, indent=2))
    if cfg.latency.table is not None and not (run_dir / LATENCY_TABLE).exists():
        shutil.copyfile(cfg.latency.table, run_dir / LATENCY_TABLE)


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
               progress: str = "normal") -> SearchResult:
    """The search in ``run_dir``, whose lock the caller holds (``search`` and ``resume`` take it first)."""
    run_dir = run_dir.resolve()
    if not resume:
        refuse_a_second_search(run_dir)
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
        refuse_state_of_an_earlier_version(run_dir, Path(experiment))
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
            baseline = tasks.baseline(cfg, run_dir, starting)
            refuse_a_weak_baseline(cfg, baseline, model_info["num_classes"])
            profile = tasks.profile(cfg, run_dir, baseline, starting)
            table = LatencyTable.load(run_dir / LATENCY_TABLE).to_dict() if cfg.latency.table else None
            loss_paths = tasks.loss_paths(cfg, run_dir, baseline, table, starting)
            trainable = tune.with_resources(
                tune.with_parameters(tasks.trainable, settings=cfg.model_dump(mode="json", by_alias=True),
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
    summary = summarize(run_dir, baseline.record(), seconds=time.time() - start)
    for session in trackers:
        session.finish(run_dir, summary)
    return summary


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


def search(
    config: str | Path | SearchConfig,
    run_dir: str | Path | None = None,
    num_trials: int | None = None,
    address: str | None = None,
    progress: str = "normal",
) -> SearchResult:
    """Run a search; returns its trials, Pareto front, counts by status, hypervolume and baseline.

    ``progress``: quiet (nothing until the end), normal (a compact block, and a line per trial
    in small sweeps) or verbose (Ray Tune's full table).
    """
    overrides = {"search.num_trials": num_trials}
    if isinstance(config, SearchConfig):
        cfg = parse_config(with_overrides(config.model_dump(mode="json", by_alias=True), overrides))
    else:
        cfg = load_config(config, overrides)
    folder = local_folder(run_dir or cfg.run_dir or Path("runs") / cfg.name)
    with run_lock(folder, "pdsearch search"):  # before anything in the folder is read
        return run_search(cfg, folder, address=address, progress=progress)


def resume(run_dir: str | Path, address: str | None = None, progress: str = "normal") -> SearchResult:
    """Continue a search whose driver died (same Tune experiment, same Optuna study)."""
    run_dir = Path(run_dir)
    with run_lock(run_dir, "pdsearch resume", create=False):  # before anything in it is read
        if not (run_dir / CONFIG_YAML).is_file():
            raise PdsearchError(f"{run_dir} is not a pdsearch run directory (no {CONFIG_YAML})")
        return run_search(load_config(run_dir / CONFIG_YAML), run_dir, address=address, resume=True,
                          progress=progress)
