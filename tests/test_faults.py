"""Fault tolerance: a driver SIGKILLed mid-search resumes; trials that raise are recorded and the search goes on."""
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from pdsearch.cli import main

from configs import tiny_config

TESTS = Path(__file__).parent


def pdsearch_process(*args: str, **kwargs) -> subprocess.Popen:
    """The CLI in its own process group (so a kill takes its local Ray with it)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([sys.executable, "-m", "pdsearch", *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def rows(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def search_in_progress(tmp_path: Path, cfg, ready) -> tuple[subprocess.Popen, Path]:
    """A search driver in its own process, once ``ready(run_dir)`` holds (within 4 minutes)."""
    config, run = tmp_path / "search.yaml", tmp_path / "run"
    config.write_text(cfg.to_yaml())
    driver = pdsearch_process("search", str(config), "--run-dir", str(run), "--address", "local")
    deadline = time.time() + 240
    while not ready(run):
        assert driver.poll() is None, driver.stdout.read()[-3000:]
        assert time.time() < deadline, "search too slow to reach the point the test waits for"
        time.sleep(0.2)
    return driver, run


@pytest.mark.slow
def test_driver_killed_mid_search_then_resume_completes_without_duplicates(tmp_path):
    cfg = tiny_config(search={"num_trials": 12, "population_size": 4}, finetune={"epochs": 3, "lr": 0.02})
    # wait for a few finished trials and a saved Tune state, then kill the driver and its local Ray
    driver, run = search_in_progress(tmp_path, cfg, lambda run: rows(run / "trials.csv") >= 3 and glob.glob(
        str(run / "tune" / cfg.name / "experiment_state-*.json")))
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = pd.read_csv(run / "trials.csv", dtype={"trial_id": str})
    assert len(before) < 12, "the search finished before it was killed"

    resumed = pdsearch_process("resume", str(run), "--address", "local")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]

    trials = pd.read_csv(run / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 12 and trials["trial_id"].is_unique  # every trial accounted for, once
    assert (trials["status"] == "ok").all()
    assert set(before["trial_id"]) <= set(trials["trial_id"])  # earlier trials kept
    assert not trials[["gpr", "pd"]].duplicated().any()  # no policy ran twice
    front = pd.read_csv(run / "pareto.csv", dtype={"trial_id": str})
    assert front["trial_id"].is_unique and set(front["trial_id"]) <= set(trials["trial_id"])
    study = optuna.load_study(study_name="pdsearch", storage=f"sqlite:///{run / 'study.db'}")
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "repeat_of" not in t.user_attrs]
    assert sorted(t.user_attrs["tune_trial_id"] for t in told) == sorted(trials["trial_id"])
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert "not a pdsearch run directory" in capsys.readouterr().err


def test_resume_before_any_tune_state_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(tiny_config().to_yaml())
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no Ray Tune state to resume" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_trial_that_raises_is_recorded_and_the_search_goes_on(ray_session, tmp_path):
    """user_models:raising_net raises in forward once pruned below 6 channels: a bug, not divergence."""
    from pdsearch.searching.driver import run_search

    cfg = tiny_config(
        model={"name": "user_models:raising_net", "kwargs": {}},
        space={"gpr": {"values": [20, 70]}, "pd": [1], "mode": "calibrated"},
        search={"sampler": "grid", "max_failures": 0},
    )
    result = run_search(cfg, tmp_path / "run")
    trials = result.trials.set_index("gpr")
    assert trials.loc[20, "status"] == "ok"
    assert trials.loc[70, "status"] == "error" and "narrow layer" in trials.loc[70, "failure_reason"]
    assert list(result.front["gpr"]) == [20]
