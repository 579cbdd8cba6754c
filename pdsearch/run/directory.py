"""A run directory: the files a search writes, and reading them back (the front is in front.py).

The search writes config.yaml and model.json before any trial, rewrites trials.csv as
each trial ends, and keeps the Optuna study (SQLite here or a database elsewhere) with
every trial's metrics as a user attribute. Reports and selection read a finished run,
a running one or one that crashed, from trials.csv or, if it is gone, from the study.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from pdsearch.catalog.objectives import CONSTRAINTS, OBJECTIVES
from pdsearch.config import Constraints, SearchConfig, load_config
from pdsearch.errors import PdsearchError
from pdsearch.files import atomic_path
from pdsearch.registry import unknown
from pdsearch.run.front import pareto_front
from pdsearch.space import POLICY_COLUMNS, SearchSpace, policy_fields

TRIALS_CSV, PARETO_CSV, CONFIG_YAML, STUDY_DB = "trials.csv", "pareto.csv", "config.yaml", "study.db"
MODEL_JSON, POLICY_JSON, BASELINE_JSON = "model.json", "policy.json", "baseline/baseline.json"
LATENCY_TABLE = "latency_table.json"  # the search's copy of latency.table: trials and resume read this one
SENSITIVITY_CSV, SENSITIVITY_PNG = "sensitivity.csv", "sensitivity.png"
METRICS_ATTR = "metrics"  # the Optuna user attribute holding a trial's metrics
INFEASIBLE_ATTR = "infeasible"  # ... and why a policy could not be built (it never ran)
NUMERIC_COLUMNS = [
    "gpr", "budget", "slope", "curvature", "accuracy", "accuracy_std", "test_accuracy", "test_accuracy_std",
    "accuracy_before_finetune", "acc_drop", "acc_drop_std", "flops", "params", "flops_reduction_pct",
    "params_reduction_pct", "allocation_seconds", "seconds", "accuracy_pruned", "epoch", "epochs",
    "latency_ms", "latency_iqr_ms", "baseline_latency_ms", "latency_predicted_ms", "baseline_latency_predicted_ms",
    "latency_predicted_reduction_pct", "latency_aim_pct", "round_to", "energy_mj_per_image", "baseline_energy_mj_per_image",
    "accuracy_fp32", "test_accuracy_fp32", "quantization_drop", "quantization_seconds", "baseline_latency_ms_vs_fp32",
    "latency_ratio_vs_fp32", "latency_reduction_pct_vs_fp32", "latency_fp32_ms", "quantization_speedup",
    *(o.metric for o in OBJECTIVES.values()), *(c.metric for c in CONSTRAINTS.values()),
]


def storage_url(cfg: SearchConfig, run_dir: Path) -> str:
    return cfg.search.storage or f"sqlite:///{(Path(run_dir) / STUDY_DB).resolve()}"


def study_storage(cfg: SearchConfig, run_dir: Path) -> optuna.storages.RDBStorage:
    """The study's storage, checked to answer: a database server is pinged before each use (it may have
    restarted), and a wrong URL, a refused connection or bad credentials are one line, without the password."""
    url = storage_url(cfg, run_dir)
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "mysql")):
        engine["connect_args"] = {"connect_timeout": 10}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as exc:  # the driver's ImportError, sqlalchemy's errors, optuna's: all say why in a line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
        if password:
            first = first.replace(password, "***")
        raise PdsearchError(f"cannot open the study database {masked_url(url)}: {first}") from None


def study_location(cfg: SearchConfig, run_dir: Path) -> str:
    """Where the study is, for people: study.db, or the storage URL without its password."""
    if cfg.search.storage is None:
        return STUDY_DB
    return masked_url(cfg.search.storage)


def masked_url(url: str) -> str:
    """A database URL with its password masked (postgresql://user:***@host/db)."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def written(cfg: SearchConfig, run_dir: Path) -> list[str]:
    """What a search left in ``run_dir`` (files that exist), then where its study is."""
    names = [TRIALS_CSV, PARETO_CSV, STUDY_DB, CONFIG_YAML, MODEL_JSON, LATENCY_TABLE, "baseline/", "tune/"]
    found = [name for name in names if (Path(run_dir) / name.rstrip("/")).exists()]
    if cfg.search.storage is not None:
        found.append(f"study in {study_location(cfg, run_dir)}")
    return found


STATUSES = ("ok", "stopped", "failed", "infeasible")  # what a trials.csv row's status says, in summaries


def status_counts(trials: pd.DataFrame) -> str:
    """'2 ok, 8 stopped, 0 failed, 0 infeasible' (a trial that raised counts as failed), as every summary says it."""
    counts = trials["status"].replace({"error": "failed"}).value_counts() if len(trials) else pd.Series(dtype=int)
    return ", ".join(f"{int(counts.get(status, 0))} {status}" for status in STATUSES)


def load_study(cfg: SearchConfig, run_dir: Path) -> optuna.Study:
    """The run's Optuna study, or one line saying why it cannot be read."""
    try:
        return optuna.load_study(study_name=cfg.search.study_name, storage=storage_url(cfg, run_dir))
    except Exception as exc:  # missing database, unknown study name, unreachable server
        raise PdsearchError(f"cannot read the study of {run_dir}: {str(exc).splitlines()[0]}") from None


def name_objectives(study: optuna.Study, cfg: SearchConfig) -> None:
    """Name the study's values after the search's objectives (optuna-dashboard shows them, not 0, 1, 2)."""
    if study.metric_names != cfg.search.objectives:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what optuna-dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(cfg.search.objectives))


def ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Policy columns first, then the rest as they come."""
    front = [c for c in POLICY_COLUMNS if c in frame.columns]
    return frame[front + [c for c in frame.columns if c not in front]]


@dataclass
class Run:
    """What a search left in its directory, read at one moment."""

    run_dir: Path
    cfg: SearchConfig
    trials: pd.DataFrame  # one row per finished trial (status ok, failed or error)
    source: str  # "trials.csv" or "study"
    note: str  # why the study was read although trials.csv exists ("" otherwise)
    model: dict[str, Any]  # model.json: name, base flops/params, layers (name, position, channels)
    baseline: dict[str, Any] | None  # baseline.json: accuracies of the unpruned model

    @functools.cached_property
    def space(self) -> SearchSpace:
        return SearchSpace(self.cfg)

    @property
    def completed(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == "ok"] if len(self.trials) else self.trials

    @property
    def failed(self) -> pd.DataFrame:
        """Trials that failed, raised, or could not be built (stopped ones did nothing wrong)."""
        return self.trials[~self.trials["status"].isin(["ok", "stopped"])] if len(self.trials) else self.trials

    @property
    def stopped(self) -> pd.DataFrame:
        """Trials a scheduler stopped at a rung: partly fine-tuned, never on the front."""
        return self.trials[self.trials["status"] == "stopped"] if len(self.trials) else self.trials

    def in_precision(self, precision: str) -> "Run":
        """This run with only the trials whose policy ships in ``precision`` (runs before precisions: fp32)."""
        searched = self.cfg.space.precision
        if precision not in searched:
            raise PdsearchError(f"{self.run_dir} searched precision {', '.join(searched)}, not {precision!r}")
        if not len(self.trials):
            return self
        return dataclasses.replace(self, trials=self.trials[shipped_precision(self.trials) == precision])

    def front(self, constraints: Constraints | None = None) -> pd.DataFrame:
        """The Pareto front of the completed trials that meet ``constraints`` (default: the search's)."""
        return pareto_front(self.completed, self.cfg.search.objectives, constraints or self.cfg.search.constraints)


def shipped_precision(trials: pd.DataFrame) -> pd.Series:
    """Each trial's precision (runs from before precisions shipped in FP32)."""
    column = trials["precision"] if "precision" in trials.columns else pd.Series("fp32", index=trials.index)
    return column.fillna("fp32").replace("", "fp32")


def read_setup(run_dir: str | Path) -> tuple[Path, SearchConfig, dict[str, Any]]:
    """What a run was set up with, before any trial: its folder, config and model.json."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_YAML).is_file():
        raise PdsearchError(f"{run_dir} is not a pdsearch run directory (no {CONFIG_YAML})")
    cfg = load_config(run_dir / CONFIG_YAML)
    model = _read_json(run_dir / MODEL_JSON)
    if model is None:
        raise PdsearchError(f"{run_dir} has no {MODEL_JSON}: the search stopped before its preflight finished")
    return run_dir, cfg, model


def load_run(run_dir: str | Path, source: str = "auto") -> Run:
    """Read a run directory; ``source`` is auto (trials.csv if present, else the study), csv or study."""
    if source not in ("auto", "csv", "study"):
        raise PdsearchError(unknown("source", source, ("auto", "csv", "study")))
    run_dir, cfg, model = read_setup(run_dir)
    has_csv = (run_dir / TRIALS_CSV).is_file()
    requested, note = source, ""
    if requested == "csv" or (requested == "auto" and has_csv):
        if not has_csv:
            raise PdsearchError(f"{run_dir} has no {TRIALS_CSV} yet: no trial has finished")
        trials, source = read_trials(run_dir / TRIALS_CSV), "trials.csv"
        if requested == "auto":  # a truncated or lagging trials.csv: the study is the record of what ran
            try:
                from_study = trials_from_study(cfg, run_dir)
            except PdsearchError:
                from_study = trials
            if len(from_study) > len(trials):
                note = (f"{TRIALS_CSV} has {len(trials)} trials, the study {len(from_study)} finished ones: "
                        "reading the study")
                trials, source = from_study, "study"
    else:
        trials, source = trials_from_study(cfg, run_dir), "study"
    return Run(run_dir, cfg, _typed(trials), source, note, model, _read_json(run_dir / BASELINE_JSON))


def read_trials(path: Path) -> pd.DataFrame:
    """trials.csv as written (append-only): the last row of each trial wins, rows that do not parse are skipped."""
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype={"trial_id": str}, on_bad_lines="skip")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    if "trial_id" not in frame.columns:
        return pd.DataFrame()
    return frame.drop_duplicates("trial_id", keep="last").reset_index(drop=True)


class TrialTable:
    """trials.csv, one row appended per finished trial: recording costs the same at trial 10 and 10,000.

    The header is read from the file on each append (one line), so the Tune callback and
    the searcher (which records infeasible policies) can both append. A row with a column
    the header lacks widens the file once; a trial recorded again (rerun after a resume)
    appends a newer row, which readers prefer and ``compact`` keeps.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _header(self) -> list[str]:
        try:
            with open(self.path, newline="") as f:
                return next(csv.reader(f), [])
        except FileNotFoundError:
            return []

    def append(self, row: dict[str, Any]) -> None:
        header = self._header()
        if not header or not set(row) <= set(header):
            frame = read_trials(self.path) if header else pd.DataFrame()
            self._write(ordered(pd.concat([frame, pd.DataFrame([row])], ignore_index=True)))
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=header, restval="").writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def compact(self) -> None:
        """Rewrite with one row per trial (at the end of a search)."""
        if self.path.is_file():
            self._write(ordered(read_trials(self.path)))

    def _write(self, frame: pd.DataFrame) -> None:
        with atomic_path(self.path) as tmp:
            frame.to_csv(tmp, index=False)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError as exc:
        raise PdsearchError(f"{path} is not valid JSON: {exc}") from None


def _typed(trials: pd.DataFrame) -> pd.DataFrame:
    if not len(trials):
        return pd.DataFrame(columns=list(dict.fromkeys(POLICY_COLUMNS + NUMERIC_COLUMNS)))
    trials = trials.copy()
    for column in NUMERIC_COLUMNS:
        if column in trials.columns:
            trials[column] = pd.to_numeric(trials[column], errors="coerce")
    trials["trial_id"] = trials["trial_id"].astype(str)
    return trials


def trials_from_study(cfg: SearchConfig, run_dir: Path) -> pd.DataFrame:
    """The trials table rebuilt from the Optuna study (policies from params, metrics from user attributes)."""
    space = SearchSpace(cfg)
    study = load_study(cfg, run_dir)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)):
        if not t.params or not {"tune_trial_id", INFEASIBLE_ATTR} & t.user_attrs.keys():
            continue  # no Tune trial finished it: a repeat told its twin's result, or one whose driver died or
            # whose database broke as it was asked
        metrics = dict(t.user_attrs.get(METRICS_ATTR, {}))
        row = {"trial_id": t.user_attrs.get("tune_trial_id"),
               **t.params, **policy_fields(space.policy(t.params)), **metrics}
        if INFEASIBLE_ATTR in t.user_attrs:  # planned on the driver, never run
            row.update(trial_id=f"infeasible-{t.number}", status="infeasible", failure_reason=t.user_attrs[INFEASIBLE_ATTR])
        elif t.state == optuna.trial.TrialState.COMPLETE and metrics.get("status", "ok") == "ok":
            row.update(status="ok", failure_reason="")
        else:
            row.update(status="failed", failure_reason=t.user_attrs.get("failure_reason", "trial raised an error"))
        rows.append(row)
    return ordered(pd.DataFrame(rows)) if rows else pd.DataFrame()
