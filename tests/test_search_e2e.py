"""End to end through real Ray Tune and Optuna (no mocks)."""
import json

import numpy as np
import optuna
import pandas as pd
import pytest

import pdsearch.searching.driver as search_mod
from pdsearch.cli import main

from configs import tiny_config

OBJECTIVES = {"accuracy": -1, "flops": 1, "params": 1}  # sign: minimise sign*value


def dominated(row, others):
    a = np.array([OBJECTIVES[k] * row[k] for k in OBJECTIVES])
    for _, o in others.iterrows():
        b = np.array([OBJECTIVES[k] * o[k] for k in OBJECTIVES])
        if np.all(b <= a) and np.any(b < a):
            return True
    return False


def test_run_directory_contents(nsga_run):
    cfg, run_dir, result = nsga_run
    for name in ("trials.csv", "pareto.csv", "study.db", "config.yaml", "model.json", "baseline/baseline.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "tune" / cfg.name).is_dir()
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials) == 8 and trials["trial_id"].is_unique
    for column in ("gpr", "pd", "criterion", "status", "accuracy", "test_accuracy", "accuracy_before_finetune",
                   "flops", "params", "flops_reduction_pct", "params_reduction_pct", "acc_drop", "rates",
                   "seconds", "device", "node_id"):
        assert column in trials.columns, column
    assert (trials["status"] == "ok").all()
    assert len(trials[["gpr", "pd"]].drop_duplicates()) == 8  # no policy ran twice
    assert all(len(json.loads(r)) == 5 for r in trials["rates"])
    assert result.baseline["val_accuracy"] > 80


def test_front_is_feasible_non_dominated_and_consistent(nsga_run):
    cfg, run_dir, _ = nsga_run
    trials = pd.read_csv(run_dir / "trials.csv")
    front = pd.read_csv(run_dir / "pareto.csv")
    assert len(front) >= 1
    feasible = trials[(trials["status"] == "ok") & (trials["acc_drop"] <= 8.0)]
    assert (front["acc_drop"] <= 8.0).all()
    for _, row in front.iterrows():
        assert not dominated(row, feasible)
        same = trials[trials["trial_id"] == row["trial_id"]]
        assert len(same) == 1
        for k in ("gpr", "pd", "accuracy", "flops", "params"):
            assert same.iloc[0][k] == row[k]
    # every feasible non-dominated trial is on the front
    expected = {r["trial_id"] for _, r in feasible.iterrows() if not dominated(r, feasible)}
    assert set(front["trial_id"]) == expected
    # plain Optuna reads the same front back from the study
    study = optuna.load_study(study_name=cfg.search.study_name, storage=f"sqlite:///{run_dir / 'study.db'}")
    # (a re-proposed policy, told its twin's result, stands for that twin)
    assert {t.user_attrs.get("tune_trial_id") or t.user_attrs["repeat_of"] for t in study.best_trials} == expected
    assert len(study.directions) == 3


def test_rerun_into_same_directory_is_refused(nsga_run, capsys):
    _, run_dir, _ = nsga_run
    assert main(["search", str(run_dir / "config.yaml"), "--run-dir", str(run_dir)]) == 2
    assert "already holds a search" in capsys.readouterr().err


@pytest.mark.slow  # (29 s: the default run stays under 5 minutes)
def test_grid_search_records_failures_and_goes_on(ray_session, tmp_path):
    cfg = tiny_config(
        model={"name": "user_models:fragile_net", "kwargs": {}},
        space={"gpr": {"values": [20, 70]}, "pd": [1, 3], "mode": "calibrated"},
        search={"sampler": "grid"},
    )
    result = search_mod.run_search(cfg, tmp_path)
    trials = result.trials
    assert len(trials) == 4
    assert set(zip(trials["gpr"], trials["pd"])) == {(20.0, "PD1"), (20.0, "PD3"), (70.0, "PD1"), (70.0, "PD3")}
    failed = trials[trials["status"] == "failed"]
    assert len(failed) >= 1 and failed["failure_reason"].str.startswith("diverged").all()
    assert (trials[trials["gpr"] == 20.0]["status"] == "ok").all()
    assert not set(result.front["trial_id"]) & set(failed["trial_id"])
    study = optuna.load_study(study_name="pdsearch", storage=f"sqlite:///{tmp_path / 'study.db'}")
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.FAIL in states
