"""MO-ASHA: who continues at a rung, who stops, infeasible last; and the trial's per-epoch reports."""
import numpy as np
import pytest
import torch
from ray.tune.schedulers import TrialScheduler

from pdsearch.searching.mo_asha import MultiObjectiveASHA, continues, ranking, rungs
from pdsearch.trial.trial import run_trial

from configs import tiny_config


def rec(acc, flops, violation=0.0):
    return np.array([-acc, flops]), violation  # accuracy maximised, FLOPs minimised


def test_rungs_lie_below_the_full_budget():
    assert rungs(1, 3, 15) == [1, 3, 9]
    assert rungs(0, 3, 10) == [0, 1, 3, 9]
    assert rungs(2, 2, 8) == [2, 4]
    assert rungs(3, 3, 3) == []


def test_ranking_is_non_dominated_sorting_with_infeasible_last():
    records = {
        "front_a": rec(90, 50), "front_b": rec(80, 20),  # neither dominates the other
        "dominated": rec(85, 60),  # dominated by front_a
        "infeasible_best": rec(99, 10, violation=2.0),  # would dominate everything, but misses a constraint
        "infeasible_worse": rec(99, 10, violation=5.0),
    }
    order = ranking(records)
    assert set(order[:2]) == {"front_a", "front_b"} and order[2] == "dominated"
    assert order[3:] == ["infeasible_best", "infeasible_worse"]  # by total violation


def test_asha_rule_keeps_the_top_third():
    records = {f"t{i}": rec(50 + i, 100) for i in range(9)}  # same cost: accuracy decides
    kept = [t for t in records if continues(records, t, eta=3)]
    assert kept == ["t6", "t7", "t8"]
    assert continues({"alone": rec(10, 100)}, "alone", eta=3)  # the first at a rung always goes on
    # crowding breaks ties inside a front: the extremes of a front are kept before its middle
    front = {"lo": rec(60, 10), "mid": rec(70, 20), "mid2": rec(71, 21), "hi": rec(90, 90)}
    assert set(ranking(front)[:2]) == {"lo", "hi"}


class Trial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def result(epoch, acc, flops, drop=1.0, status="running"):
    return {"epoch": epoch, "accuracy": acc, "flops": flops, "params": 10.0, "acc_drop": drop, "status": status}


def test_scheduler_stops_at_rungs_asynchronously():
    cfg = tiny_config(search={"constraints": {"min_flops_reduction": 50.0}})
    sched = MultiObjectiveASHA(["accuracy", "flops"], ["max", "min"], [1, 3], 3,
                               violation=lambda r: max(0.0, cfg.search.constraints.violations(r)["flops_reduction"]))
    decide = lambda tid, res: sched.on_trial_result(None, Trial(tid), {**res, "flops_reduction_pct": 100 - res["flops"]})  # noqa: E731
    assert decide("a", result(1, 80, 50)) == TrialScheduler.CONTINUE  # first at the rung
    assert decide("b", result(1, 70, 40)) == TrialScheduler.STOP  # a's and b's trade-offs differ, but top 1 of 2
    assert decide("c", result(1, 99, 60)) == TrialScheduler.STOP  # the best accuracy, but misses the FLOPs bound
    assert decide("d", result(2, 10, 99)) == TrialScheduler.CONTINUE  # between rungs: no decision
    assert decide("e", result(3, 10, 99, status="ok")) == TrialScheduler.CONTINUE  # a final result
    assert set(sched.records[1]) == {"a", "b", "c"} and not sched.records[3]


def test_at_a_rung_only_cost_constraints_count():
    c = tiny_config(search={"constraints": {"max_acc_drop": 2.0, "min_flops_reduction": 30}}).search.constraints
    immature = {"acc_drop": 20.0, "flops_reduction_pct": 40.0}
    assert c.violations(immature) == {"acc_drop": 18.0, "flops_reduction": -10.0}
    assert c.violations(immature, fixed_only=True) == {"flops_reduction": -10.0}


def test_a_never_stopped_trial_gives_what_fifo_gives(baseline):
    cfg = tiny_config(finetune={"epochs": 3, "lr": 0.02})
    seen = []
    reported = run_trial({"gpr": 40.0, "pd": "PD2"}, cfg, baseline, torch.device("cpu"), report=seen.append)
    plain = run_trial({"gpr": 40.0, "pd": "PD2"}, cfg, baseline, torch.device("cpu"))
    assert [r["epoch"] for r in seen] == [0, 1, 2, 3] and all(r["status"] == "running" for r in seen)
    assert seen[0]["accuracy"] == reported["accuracy_before_finetune"] and seen[-1]["accuracy"] == reported["accuracy"]
    assert all(r["flops"] == plain["flops"] for r in seen)  # the cost is known from the start
    for key in ("accuracy", "test_accuracy", "accuracy_before_finetune", "flops", "params"):
        assert reported[key] == plain[key]
    assert reported["epochs"] == 3 and reported["status"] == "ok"


def test_screening_reestimates_batchnorm(baseline):
    m = run_trial({"gpr": 50.0, "pd": "PD1"}, tiny_config(finetune={"epochs": 0}), baseline, torch.device("cpu"))
    off = run_trial({"gpr": 50.0, "pd": "PD1"}, tiny_config(finetune={"epochs": 0, "bn_recalibration_batches": 0}),
                    baseline, torch.device("cpu"))
    assert off["accuracy_before_finetune"] == off["accuracy_pruned"] == m["accuracy_pruned"]
    assert m["accuracy_before_finetune"] != m["accuracy_pruned"]


MO_ASHA = {"scheduler": "mo_asha", "fidelity": {"min_epochs": 0, "eta": 2}, "num_trials": 12, "population_size": 4}


@pytest.mark.slow
def test_mo_asha_search_stops_trials_and_keeps_them_off_the_front(ray_session, tmp_path):
    import optuna

    from pdsearch.run.directory import load_run
    from pdsearch.searching.driver import run_search

    cfg = tiny_config(finetune={"epochs": 4, "lr": 0.02}, search=MO_ASHA)
    result = run_search(cfg, tmp_path)
    trials = load_run(tmp_path).trials
    stopped, done = trials[trials["status"] == "stopped"], trials[trials["status"] == "ok"]
    assert len(trials) == 12 and len(stopped) >= 3 and len(done) >= 1
    assert set(stopped["epochs"]) <= {0, 1, 2} and (done["epochs"] == 4).all()
    assert trials["finished_at"].str.match(r"\d{4}-\d\d-\d\dT").all()
    assert set(result.front["trial_id"]) <= set(done["trial_id"])
    study = optuna.load_study(study_name="pdsearch", storage=f"sqlite:///{tmp_path / 'study.db'}")
    pruned = {t.user_attrs["tune_trial_id"] for t in study.trials if t.state == optuna.trial.TrialState.PRUNED
              and "repeat_of" not in t.user_attrs}
    assert pruned == set(stopped["trial_id"])
    from pdsearch.reporting.document import report

    rep = report(tmp_path)  # the screening correlation needs 3 completed trials; how many complete is the scheduler's call
    assert ("screening.png" in rep.plots) == ("Spearman" in rep.markdown.read_text()) == (len(done) >= 3)


@pytest.mark.slow
def test_resume_keeps_stopped_trials_stopped_and_completes_the_rest(tmp_path):
    import os
    import signal

    import pandas as pd
    from test_faults import pdsearch_process, search_in_progress

    cfg = tiny_config(finetune={"epochs": 4, "lr": 0.02}, search={**MO_ASHA, "num_trials": 16})
    stopped_seen = lambda run: (run / "trials.csv").exists() and "stopped" in (run / "trials.csv").read_text()  # noqa: E731
    driver, run = search_in_progress(tmp_path, cfg, stopped_seen)
    os.kill(driver.pid, signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output[-3000:]
    before = pd.read_csv(run / "trials.csv", dtype={"trial_id": str})
    stopped = before[before["status"] == "stopped"].set_index("trial_id")
    assert len(stopped) >= 1

    resumed = pdsearch_process("resume", str(run), "--address", "local")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    after = pd.read_csv(run / "trials.csv", dtype={"trial_id": str}).set_index("trial_id")
    assert len(after) == 16 and after.index.is_unique
    assert (after.loc[stopped.index, "status"] == "stopped").all()  # never rerun
    assert (after.loc[stopped.index, "epochs"] == stopped["epochs"]).all()
    assert set(after["status"]) <= {"ok", "stopped"}
