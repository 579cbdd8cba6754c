"""Nothing lost: one driver per run directory, unbuildable policies screened on the driver,
interrupts that say how to resume, trials.csv and the study kept in agreement."""
import json
import os
import shutil
import signal
import subprocess
import sys

import optuna
import pandas as pd
import pytest

import pdsearch.searching
from conftest import tiny_config
from pdsearch.cli import main
from pdsearch.errors import PdsearchError
from pdsearch.locking import LOCK_FILE, run_lock
from pdsearch.rundir import load_run
from test_faults import pdsearch_process, rows, search_in_progress
from test_trial import make_searcher


def test_a_second_driver_is_refused_with_the_holder_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pdsearch.searching, "connect", lambda *a: pytest.fail("Ray started by the second driver"))
    config, run = tmp_path / "search.yaml", tmp_path / "run"
    config.write_text(tiny_config().to_yaml())
    with run_lock(run, "pdsearch search"):
        holder = json.loads((run / LOCK_FILE).read_text())
        assert main(["search", str(config), "--run-dir", str(run)]) == 2
        assert main(["resume", str(run)]) == 2  # no config.yaml yet: refused either way, nothing written
    err = capsys.readouterr().err.strip().splitlines()
    assert f"is in use by pdsearch search (host {holder['host']}, pid {os.getpid()}, since {holder['since']})" in err[0]
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    code = f"from pdsearch.locking import run_lock\nwith run_lock({str(run)!r}, 'holder'):\n    print('held', flush=True)\n    input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(PdsearchError, match=f"in use by holder .*pid {holder.pid}"):
        with run_lock(run, "second"):
            pass
    holder.kill()
    holder.wait()
    with run_lock(run, "resume after SIGKILL"):  # the kernel released the dead process's lock
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_unbuildable_policies_are_told_infeasible_and_recorded_never_run(tmp_path):
    # GPR 85 with slopes of 2-3 cannot match homogeneous pruning under a 90% cap; GPR 10 can
    cfg = tiny_config(space={"pd": None, "gpr": {"values": [10, 85]},
                             "shape": {"slope": {"low": 2.0, "high": 3.0}, "curvature": {"low": 0.0, "high": 0.0}}})
    searcher = make_searcher(cfg, tmp_path)
    suggested = [searcher.suggest(f"t{i}") for i in range(4)]
    assert all(p["gpr"] == 10 for p in suggested)  # only buildable policies reach Tune
    table = pd.read_csv(tmp_path / "trials.csv")
    assert len(table) >= 1 and set(table["status"]) == {"infeasible"} and (table["gpr"] == 85).all()
    assert table["failure_reason"].str.contains("cannot match").all()
    told = [t for t in searcher._ot_study.trials if "infeasible" in t.user_attrs]
    assert len(told) == len(table)
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.constraints == {"buildable": 100.0} for t in told)


def test_a_policy_error_in_a_trial_is_a_failed_trial_not_a_retry(monkeypatch):
    from pdsearch import baseline as baseline_mod
    from pdsearch.trial import run_trial

    def impossible(*args, **kwargs):
        raise PdsearchError("budget FLOPs reduction 99% is unreachable")

    monkeypatch.setattr("pdsearch.trial.allocate", impossible)
    cfg = tiny_config()
    m = run_trial({"gpr": 30.0, "pd": "PD1"}, cfg, baseline_mod.build_baseline(cfg), __import__("torch").device("cpu"))
    assert m["status"] == "failed" and "unreachable" in m["failure_reason"]


def test_a_short_trials_csv_gives_way_to_the_study(nsga_run, tmp_path, capsys):
    _, run_dir, _ = nsga_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tune"))
    lines = (copy / "trials.csv").read_text().splitlines()
    (copy / "trials.csv").write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])  # truncated mid-row
    run = load_run(copy)
    assert run.source == "study" and len(run.trials) == len(lines) - 1
    assert "trials.csv has" in run.note and "reading the study" in run.note
    assert main(["report", str(copy)]) == 0
    out, err = capsys.readouterr()
    assert "reading the study" in err and len(err.strip().splitlines()) == 1


def test_a_trial_asked_for_by_a_driver_that_died_before_its_policy_is_not_a_row(nsga_run, tmp_path):
    import optuna

    cfg, run_dir, _ = nsga_run
    copy = shutil.copytree(run_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("tune"))
    study = optuna.load_study(study_name=cfg.search.study_name, storage=f"sqlite:///{copy / 'study.db'}")
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))  # asked, no params, failed on resume
    assert len(load_run(copy, "study").trials) == len(load_run(copy, "csv").trials)


@pytest.mark.slow
def test_sigint_says_how_to_resume_and_resume_completes_without_duplicates(tmp_path):
    cfg = tiny_config(search={"num_trials": 10, "population_size": 4}, finetune={"epochs": 3, "lr": 0.02})
    driver, run = search_in_progress(tmp_path, cfg, lambda run: rows(run / "trials.csv") >= 3)
    os.kill(driver.pid, signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("pdsearch: interrupted after ") and last.endswith(f"of 10 trials; continue with: pdsearch resume {run}")

    resumed = pdsearch_process("resume", str(run), "--address", "local")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    trials = pd.read_csv(run / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 10 and trials["trial_id"].is_unique and (trials["status"] == "ok").all()
    assert not trials[["gpr", "pd"]].duplicated().any()


@pytest.mark.slow
def test_a_second_driver_is_refused_while_the_first_completes_with_every_row(tmp_path):
    cfg = tiny_config(search={"num_trials": 16, "population_size": 4}, finetune={"epochs": 8, "lr": 0.02})
    first, run = search_in_progress(tmp_path, cfg, lambda run: rows(run / "trials.csv") >= 1)
    second = subprocess.run([sys.executable, "-m", "pdsearch", "search", str(tmp_path / "search.yaml"), "--run-dir", str(run)],
                            capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first search ended before the second driver tried"
    assert second.returncode == 2 and "is in use by pdsearch search (host " in second.stderr
    assert f"pid {first.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output[-3000:]
    trials = pd.read_csv(run / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 16 and trials["trial_id"].is_unique and (trials["status"] == "ok").all()


@pytest.mark.slow
def test_sigterm_stops_gracefully_with_exit_143(tmp_path):
    cfg = tiny_config(search={"num_trials": 10, "population_size": 4}, finetune={"epochs": 3, "lr": 0.02})
    driver, run = search_in_progress(tmp_path, cfg, lambda run: rows(run / "trials.csv") >= 2)
    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 143, output[-3000:]
    assert output.strip().splitlines()[-1].endswith(f"continue with: pdsearch resume {run}")
