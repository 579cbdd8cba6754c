"""The search: Ray Tune runs the trials, an Optuna multi-objective sampler proposes them.

The space goes to OptunaSearch itself with metric and mode as lists: a space passed
through Tune's ``param_space`` together with a TuneConfig metric would silently make
the study single-objective. Scheduling is FIFO: Tune's early-stopping schedulers track
one metric and would feed immature values to a multi-objective study.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
import torch
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from pdsearch.baseline import build_baseline, cached_baseline, load_checkpoint, model_and_data, save_baseline
from pdsearch.config import OBJECTIVES, SearchConfig, load_config, parse_config, with_overrides
from pdsearch.errors import PdsearchError
from pdsearch.planning import Planner
from pdsearch.rundir import (
    CONFIG_YAML, METRICS_ATTR, MODEL_JSON, PARETO_CSV, TRIALS_CSV, load_run, ordered, storage_url,
)
from pdsearch.trial import policy_from_params, run_trial

# Ray Tune's compact table reporter (the default output prints every result in full).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Save the experiment state (what `resume` restores) every 5 s instead of Tune's 10 s or more.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")

TUNE_FIELDS = {*AUTO_RESULT_KEYS, *DEBUG_METRICS, "done"}  # what Tune adds to every result


class PolicySearcher(OptunaSearch):
    """OptunaSearch that tells Optuna about failures and constraints before ``tell``.

    A failed trial (diverged, out of memory) is told as FAIL, never with placeholder
    values or NaN (which would leave the Optuna trial RUNNING for good). Constraints are
    set with Optuna's ``Trial.set_constraint``, which its samplers and ``best_trials`` read.
    """

    MAX_REDRAWS = 50

    def __init__(self, *args: Any, cfg: SearchConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cfg = cfg
        self._policies: dict[str, str] = {}  # policy key -> Tune trial id that runs it
        self._results: dict[str, tuple[list[float], dict[str, float]]] = {}  # policy key -> values, constraints
        self._resumed = False
        self._budget = trial_budget(cfg)

    @staticmethod
    def _key(params: dict[str, Any]) -> str:
        return json.dumps(params, sort_keys=True)

    def suggest(self, trial_id: str) -> dict | None:
        """A policy not run yet: samplers over discrete spaces (GPR steps x PDs) repeat themselves.

        A repeat of a finished policy (trials are deterministic given policy and seed) is
        told to Optuna with the known result, so the sampler learns from it at no cost.
        """
        if len(self._policies) >= self._budget:  # after a resume, the study may hold more than Tune knows
            return Searcher.FINISHED
        for _ in range(self.MAX_REDRAWS):
            params = super().suggest(trial_id)
            key = self._key(params)
            if key not in self._policies:
                break
            ot_trial = self._ot_trials.pop(trial_id)
            ot_trial.set_user_attr("repeat_of", self._policies[key])
            if key in self._results:
                values, constraints = self._results[key]
                for name, value in constraints.items():
                    ot_trial.set_constraint(name, value)
                self._ot_study.tell(ot_trial, values)
            else:  # its twin is still running
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        self._policies.setdefault(self._key(params), trial_id)
        return params

    def _finished_in_study(self, ot_trial: optuna.trial.Trial) -> bool:
        """True for a trial told before the driver died but after Tune's last checkpoint."""
        if not self._resumed:
            return False
        return self._ot_study.get_trials(deepcopy=False)[ot_trial.number].state.is_finished()

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """After a driver crash, trust the study over the checkpoint, which may lag behind it.

        Policies the study has finished are known again (never rerun), and trials the
        dead driver had started but no restored Tune trial will finish are failed.
        """
        super().restore_from_dir(checkpoint_dir)
        self._resumed = True
        known = {t.number for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False):
            if "repeat_of" in frozen.user_attrs:
                continue
            key = self._key(frozen.params)
            if frozen.state == optuna.trial.TrialState.RUNNING and frozen.number not in known:
                self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
            elif frozen.state.is_finished() and "tune_trial_id" in frozen.user_attrs:
                self._policies[key] = frozen.user_attrs["tune_trial_id"]
                if frozen.state == optuna.trial.TrialState.COMPLETE:
                    self._results[key] = (list(frozen.values), frozen.constraints)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and self._finished_in_study(ot_trial):
            self._completed_trials.add(trial_id)  # its rerun after a resume: the study already has it
            return
        if ot_trial is not None and trial_id not in self._completed_trials:
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            if result:  # the study alone can rebuild trials.csv (rundir.trials_from_study)
                ot_trial.set_user_attr(METRICS_ATTR, {k: v for k, v in result.items() if k not in TUNE_FIELDS})
            ok = bool(result) and not error and result.get("status") == "ok" and all(
                math.isfinite(float(result[m])) for m in self.metric
            )
            if ok:
                constraints = self._cfg.search.constraints.violations(result)
                for name, value in constraints.items():
                    ot_trial.set_constraint(name, value)
                self._results[self._key(ot_trial.params)] = ([float(result[m]) for m in self.metric], constraints)
            else:
                reason = (result or {}).get("failure_reason") or "trial raised an error"
                ot_trial.set_user_attr("failure_reason", reason)
                result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)


class TrialRecorder(tune.Callback):
    """Rewrites trials.csv whenever a trial ends, so a partial or crashed run keeps its rows."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / TRIALS_CSV
        self.rows: dict[str, dict[str, Any]] = {}

    def setup(self, **info) -> None:
        """On resume the rows so far come from trials.csv; a rerun trial replaces its row."""
        if self.path.is_file():
            earlier = pd.read_csv(self.path, keep_default_na=False, dtype={"trial_id": str})
            self.rows = {row["trial_id"]: row for row in earlier.to_dict("records")}

    def _record(self, trial, status: str | None = None, reason: str = "") -> None:
        reported = {k: v for k, v in trial.last_result.items() if k not in TUNE_FIELDS}
        row = {"trial_id": trial.trial_id, **trial.config, **reported, "retries": trial.run_metadata.num_failures}
        if status:
            row.update(status=status, failure_reason=reason)
        self.rows[trial.trial_id] = row
        frame = ordered(pd.DataFrame(list(self.rows.values())))
        tmp = self.path.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, self.path)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        local = Path(trial.error_file) if trial.error_file else None  # synced to storage only later
        error = local.read_text() if local and local.is_file() else trial.get_error()
        reason = str(error).strip().splitlines()[-1] if error else "trial raised an error"
        self._record(trial, status="error", reason=reason[:300])




def _distribution(r) -> optuna.distributions.BaseDistribution:
    if r.values_ is not None:
        return optuna.distributions.CategoricalDistribution(r.values())
    return optuna.distributions.FloatDistribution(r.low, r.high, step=r.step)


def _space(cfg: SearchConfig) -> tuple[dict[str, optuna.distributions.BaseDistribution], dict[str, list]]:
    """Optuna distributions of the space, and its grid (for the grid sampler)."""
    s = cfg.space
    dist: dict[str, optuna.distributions.BaseDistribution] = {"gpr": _distribution(s.gpr)}
    grid: dict[str, list] = {"gpr": s.gpr.values()}
    if s.pd is not None:
        dist["pd"] = optuna.distributions.CategoricalDistribution(s.pd)
        grid["pd"] = list(s.pd)
    else:
        for name in ("slope", "curvature"):
            r = getattr(s.shape, name)
            dist[name] = _distribution(r)
            grid[name] = r.values()
    for name, values in (("criterion", s.criteria), ("seed", s.seeds)):
        if len(values) > 1:
            dist[name] = optuna.distributions.CategoricalDistribution(values)
            grid[name] = list(values)
    return dist, grid


def _sampler(cfg: SearchConfig, grid: dict[str, list]) -> optuna.samplers.BaseSampler:
    name, seed = cfg.search.sampler, cfg.search.seed
    if name == "grid":
        missing = [k for k, v in grid.items() if not v]
        if missing:
            raise PdsearchError(f"search.sampler grid needs a step for {', '.join(missing)} (e.g. space.gpr.step)")
        return optuna.samplers.GridSampler(grid, seed=seed)
    return {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(population_size=cfg.search.population_size, seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }[name]()


def trial_budget(cfg: SearchConfig) -> int:
    if cfg.search.sampler != "grid":
        return cfg.search.num_trials
    return math.prod(len(v) for v in _space(cfg)[1].values())


def preflight(cfg: SearchConfig) -> dict[str, Any]:
    """Build the model, load the data and plan one policy on the driver, in seconds.

    Configuration errors surface here, before Ray starts, not as N failed trials.
    Returns what model.json records: the model's prunable layers and base cost.
    """
    dist, grid = _space(cfg)
    _sampler(cfg, grid)
    model, data = model_and_data(cfg)
    planner = Planner(model, input_size=data.input_size, in_channels=data.in_channels)
    probe = {name: (d.choices[0] if hasattr(d, "choices") else d.high) for name, d in dist.items()}
    policy = policy_from_params(probe, cfg)
    planner.plan(policy)
    if cfg.baseline.checkpoint:
        load_checkpoint(model, cfg.baseline.checkpoint)
    base = planner.cost_model.base
    return {
        "name": cfg.model.name, "input_size": data.input_size, "in_channels": data.in_channels,
        "num_classes": data.num_classes, "flops": base.flops, "params": base.params,
        "layers": [{"name": g.name, "position": round(g.position, 4), "channels": g.channels} for g in planner.groups],
    }


def _trainable(config: dict[str, Any], settings: dict[str, Any], baseline: dict[str, Any]) -> None:
    cfg = SearchConfig.model_validate(settings)
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Ray hides GPUs it did not assign
    metrics = run_trial(config, cfg, baseline, device)
    metrics["rates"] = json.dumps(metrics["rates"])
    tune.report(metrics)


def probe_address(address: str | None) -> None:
    """Fail in a second, not after Ray's minute of retries, when nothing listens at host:port."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # None, 'auto', 'local', ray://: Ray resolves these itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise PdsearchError(f"cannot connect to Ray at {address!r}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def connect(address: str | None) -> bool:
    """Start or join Ray; True if this call started it (and so should stop it)."""
    if ray.is_initialized():
        return False
    try:
        with _native_stderr_silenced():  # Ray's C++ client prints a warning per failed retry
            ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     configure_logging=True, runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore"}})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        message = f"cannot connect to Ray at {address!r}: {str(exc).splitlines()[0]}"
        if "token" in f"{exc} {exc.__cause__}".lower():
            message += ("; the cluster uses token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                        "(or put the token in ~/.ray/auth_token)")
        raise PdsearchError(message) from None
    return True


def concurrency(cfg: SearchConfig) -> int:
    """Trials the cluster can run at once for the per-trial request (unless the config caps it)."""
    if cfg.resources.max_concurrent:
        return cfg.resources.max_concurrent
    available = ray.cluster_resources()
    fits = [available.get("CPU", 1) / cfg.resources.cpu]
    if cfg.resources.gpu:
        fits.append(available.get("GPU", 0) / cfg.resources.gpu)
    n = int(min(fits) + 1e-9)
    if n < 1:
        raise PdsearchError(
            f"the cluster cannot run one trial: it has {available.get('CPU', 0):g} CPUs and {available.get('GPU', 0):g} GPUs, "
            f"a trial asks for {cfg.resources.cpu:g} CPUs and {cfg.resources.gpu:g} GPUs"
        )
    return n


def _reporter() -> tune.ProgressReporter:
    return tune.CLIReporter(
        parameter_columns=["gpr", "pd", "slope", "curvature", "criterion"],
        metric_columns={"accuracy": "val acc", "acc_drop": "drop", "flops_reduction_pct": "FLOPs -%",
                        "params_reduction_pct": "params -%", "status": "status"},
        max_report_frequency=20, print_intermediate_tables=True,
    )


def _prepare_run_dir(cfg: SearchConfig, run_dir: Path, model_info: dict[str, Any]) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PdsearchError(f"run directory {run_dir} is not writable: {exc.strerror or exc}") from None
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


def tune_path(cfg: SearchConfig, run_dir: Path) -> str:
    """Where Ray Tune keeps the experiment (trial folders, the state ``resume`` restores)."""
    return cfg.search.tune_storage or str(run_dir / "tune")


def run_search(cfg: SearchConfig, run_dir: Path, address: str | None = None, resume: bool = False) -> dict[str, Any]:
    run_dir = run_dir.resolve()
    model_info = preflight(cfg)
    experiment = f"{tune_path(cfg, run_dir).rstrip('/')}/{cfg.name}"
    if resume and not tune.Tuner.can_restore(experiment):
        raise PdsearchError(f"{run_dir} has no Ray Tune state to resume at {experiment} "
                            "(the search stopped before its first checkpoint): start a new search")
    probe_address(address)
    if not resume:
        _prepare_run_dir(cfg, run_dir, model_info)
    started = connect(address)
    try:
        start = time.time()
        baseline = _baseline(cfg, run_dir)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, settings=cfg.model_dump(mode="json", by_alias=True), baseline=baseline),
            {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu},
        )
        if resume:  # same experiment, searcher and study: finished trials stay, unfinished ones rerun
            tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=False)
        else:
            tuner = _new_tuner(cfg, run_dir, trainable)
        tuner.fit()
        return summarize(run_dir, baseline, seconds=time.time() - start)
    finally:
        if started:
            ray.shutdown()


def _new_tuner(cfg: SearchConfig, run_dir: Path, trainable) -> tune.Tuner:
    dist, grid = _space(cfg)
    objectives = cfg.search.objectives
    searcher = PolicySearcher(
        space=dist, metric=objectives, mode=[OBJECTIVES[o] for o in objectives], sampler=_sampler(cfg, grid),
        study_name=cfg.search.study_name, storage=optuna.storages.RDBStorage(storage_url(cfg, run_dir)), cfg=cfg,
    )
    run_config = tune.RunConfig(
        name=cfg.name, storage_path=tune_path(cfg, run_dir), callbacks=[TrialRecorder(run_dir)],
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        progress_reporter=_reporter(), verbose=1,
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trial_budget(cfg), scheduler=FIFOScheduler(),
                                    max_concurrent_trials=concurrency(cfg), reuse_actors=True),
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
) -> dict[str, Any]:
    """Run a search; returns the trials and Pareto front (pandas) and the baseline's accuracy."""
    overrides = {"search.num_trials": num_trials}
    if isinstance(config, SearchConfig):
        cfg = parse_config(with_overrides(config.model_dump(mode="json", by_alias=True), overrides))
    else:
        cfg = load_config(config, overrides)
    folder = Path(run_dir or cfg.run_dir or Path("runs") / cfg.name)
    return run_search(cfg, folder, address=address)


def resume(run_dir: str | Path, address: str | None = None) -> dict[str, Any]:
    """Continue a search whose driver died (same Tune experiment, same Optuna study)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_YAML).is_file():
        raise PdsearchError(f"{run_dir} is not a pdsearch run directory (no {CONFIG_YAML})")
    return run_search(load_config(run_dir / CONFIG_YAML), run_dir, address=address, resume=True)
