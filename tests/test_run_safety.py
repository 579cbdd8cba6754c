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
from test_faults import pdsearch_process, rows, search_in_progress

import pdsearch.searching.driver
from pdsearch.cli import main
from pdsearch.errors import PdsearchError
from pdsearch.run.directory import load_run
from pdsearch.run.lock import LOCK_FILE, run_lock

from configs import tiny_config


def test_a_second_driver_is_refused_with_the_holder_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pdsearch.searching.driver, "connect", lambda *a: pytest.fail("Ray started by the second driver"))
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
    code = f"from pdsearch.run.lock import run_lock\nwith run_lock({str(run)!r}, 'holder'):\n    print('held', flush=True)\n    input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(PdsearchError, match=f"in use by holder .*pid {holder.pid}"):
        with run_lock(run, "second"):
            pass
    holder.kill()
    holder.wait()
    with run_lock(run, "resume after SIGKILL"):  # the kernel released the dead process's lock
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


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


def test_a_run_written_before_the_layout_moved_is_read_and_its_resume_refused_in_one_line(
        nsga_run, tmp_path, capsys, monkeypatch):
    """Ray Tune's pickled state names pdsearch's module paths: one of the earlier layout cannot be restored."""
    import pickle
    import types

    _, run_dir, _ = nsga_run
    old = shutil.copytree(run_dir, tmp_path / "old")
    experiment = next((old / "tune").iterdir())
    module = types.ModuleType("pdsearch.searcher")  # where the searcher lived before the move

    class PolicySearcher:
        pass

    PolicySearcher.__module__, PolicySearcher.__qualname__ = module.__name__, "PolicySearcher"
    module.PolicySearcher = PolicySearcher
    monkeypatch.setitem(sys.modules, module.__name__, module)
    (experiment / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps(PolicySearcher()))
    monkeypatch.delitem(sys.modules, module.__name__)
    monkeypatch.setattr(pdsearch.searching.driver, "connect", lambda *a: pytest.fail("Ray started for a stale state"))
    before = sorted(p.name for p in old.iterdir())
    assert main(["resume", str(old)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written by an earlier pdsearch" in err[0] and "pdsearch.searcher" in err[0]
    assert "another --run-dir" in err[0]
    assert sorted(p.name for p in old.iterdir()) == before
    assert main(["report", str(old)]) == 0 and main(["select", str(old)]) == 0  # its results still read


@pytest.mark.slow
def test_a_second_driver_gets_the_lock_message_from_the_first_second(tmp_path, capsys):
    """The lock comes before the preflight and the baseline: resume and select --export are refused at once."""
    cfg = tiny_config(baseline={"epochs": 40})  # a baseline that takes a while: no trial has run yet
    held = lambda run: (run / LOCK_FILE).is_file() and bool((run / LOCK_FILE).read_text().strip())  # noqa: E731
    driver, run = search_in_progress(tmp_path, cfg, held)
    try:
        assert not (run / "trials.csv").exists() and not (run / "config.yaml").exists()  # still starting
        assert main(["resume", str(run)]) == 2
        assert main(["select", str(run), "--export", str(tmp_path / "m.pt2")]) == 2
    finally:
        driver.send_signal(signal.SIGINT)
        driver.communicate(timeout=120)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("is in use by pdsearch search (host" in line for line in err), err
    assert not (tmp_path / "m.pt2").exists() and not (run / "policy.json").exists()


def test_a_second_search_into_a_run_directory_names_resume_and_a_new_run_dir(nsga_run, capsys):
    _, run_dir, _ = nsga_run
    config = run_dir.parent / "again.yaml"
    config.write_text(tiny_config().to_yaml())
    assert main(["search", str(config), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"continue it with pdsearch resume {run_dir}" in err and "new --run-dir" in err
