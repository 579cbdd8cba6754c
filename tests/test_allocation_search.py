"""One search puts hand shapes and data-driven allocations, at FLOPs budgets, on the same front."""
import json

import pandas as pd
import pytest

from pdsearch.cli import main
from pdsearch.reporting.selection import select
from pdsearch.run.directory import load_run
from pdsearch.searching.driver import run_search

from configs import tiny_config

FAST_ALLOCATORS = {"loss_aware": {"slice": 0.125, "loss_batches": 1, "retrain_steps": 4},
                   "sensitivity": {"bn_batches": 4, "eval_batches": 2}}


@pytest.fixture(scope="module")
def budget_run(ray_session, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("budget")
    cfg = tiny_config(
        space={"gpr": None, "budget": {"flops_reduction": {"low": 30, "high": 70, "step": 20}},
               "pd": [1, 3, "sensitivity", "loss_aware"], "allocators": FAST_ALLOCATORS},
        search={"sampler": "grid"},
    )
    run_search(cfg, run_dir)
    return run_dir


def test_every_trial_lands_within_a_point_of_its_budget(budget_run):
    trials = load_run(budget_run).trials
    assert len(trials) == 12 and set(trials["status"]) == {"ok"}
    assert set(trials["pd"]) == {"PD1", "PD3", "sensitivity", "loss_aware"}
    assert ((trials["flops_reduction_pct"] - trials["budget"]).abs() <= 1.0).all()
    assert set(trials["budget_metric"]) == {"flops"} and (trials["gpr"] > 0).all()  # the solved equivalent
    aware = trials[trials["pd"] == "loss_aware"]
    assert all(len(json.loads(c)) == 5 for c in aware["criteria"])
    assert (aware["allocation_seconds"] > 0).all()
    # read from one greedy path to the largest budget, measured before the trials
    assert len(list((budget_run / "baseline").glob("allocation-paths-*.json"))) == 1
    assert (trials[trials["pd"] != "loss_aware"]["criteria"] == "").all()
    # a loss-aware trial chose its criteria per group: its name and criterion column say so
    assert set(aware["criterion"]) == {"mixed"} and set(trials[trials["pd"] != "loss_aware"]["criterion"]) == {"l1"}
    folders = [p.name for p in (budget_run / "tune").rglob("flops*-loss_aware-*") if p.is_dir()]
    assert folders and all("-loss_aware-mixed_" in name for name in folders)


@pytest.mark.parametrize("pd_name", ["sensitivity", "loss_aware"])
def test_export_reproduces_a_data_driven_trial(budget_run, tmp_path, pd_name):
    trials = load_run(budget_run).trials
    row = trials[(trials["pd"] == pd_name) & (trials["budget"] == 50)].iloc[0]
    chosen = select(budget_run, trial=row["trial_id"], export=tmp_path / "model.pt2")
    export = chosen.record["export"]
    assert export["flops"] == row["flops"] and export["params"] == row["params"]
    assert export["val_accuracy"] == pytest.approx(row["accuracy"])
    assert chosen.record["rates"] == pytest.approx(json.loads(row["rates"]))
    if pd_name == "loss_aware":
        assert chosen.record["criteria"] == json.loads(row["criteria"])


def test_sensitivity_verb_and_report_use_the_searchs_profile(budget_run, capsys):
    cached = list((budget_run / "baseline").glob("sensitivity-*.json"))
    assert len(cached) == 1  # measured once, before the trials
    assert main(["sensitivity", str(budget_run)]) == 0
    out = capsys.readouterr().out
    assert "cached" in out and "features.0" in out
    table = pd.read_csv(budget_run / "sensitivity.csv")
    assert len(table) == 5 * 9 and (table.groupby("group")["loss_increase"].diff().dropna() >= 0).all()
    assert (budget_run / "sensitivity.png").stat().st_size > 10_000
    assert main(["report", str(budget_run)]) == 0
    assert "Sensitivity profile" in (budget_run / "report" / "report.md").read_text()
