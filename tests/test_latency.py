"""Measured latency: a model with most of its FLOPs removed runs faster than its baseline, side by side."""
import copy

import pytest
import torch

from pdsearch.cost.latency import compare, measure_latency
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune


@pytest.mark.slow  # wall-clock timing on a loaded CPU: with the slow tests, not in the default run
def test_a_policy_removing_70_percent_of_flops_runs_faster_than_its_baseline():
    planner = Planner("vgg16_bn", num_classes=10, input_size=64)
    plan = planner.plan(Policy(budget=70, pd="PD1"))
    assert abs(plan.flops["reduction_pct"] - 70) <= 0.5
    baseline = copy.deepcopy(planner.structure.model).eval()
    pruned = prune(analyze(copy.deepcopy(baseline), 64), plan.rates).eval()
    batch = torch.randn(1, 3, 64, 64)
    fast, slow = compare(pruned, baseline, batch, warmup=3, runs=15)
    assert 0 < fast.median_ms < slow.median_ms and fast.iqr_ms >= 0


def test_latency_is_measured_in_eval_mode_and_restores_the_mode():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model.train()
    before = model[1].running_mean.clone()
    measured = measure_latency(model, torch.randn(2, 3, 8, 8), warmup=1, runs=3)
    assert measured.median_ms > 0 and model.training and torch.equal(model[1].running_mean, before)


@pytest.mark.slow
def test_a_search_on_latency_measures_it_and_builds_its_front_on_it(ray_session, tmp_path):
    from pdsearch.reporting.document import report
    from pdsearch.reporting.selection import select
    from pdsearch.run.directory import load_run
    from pdsearch.searching.driver import run_search

    from configs import tiny_config

    cfg = tiny_config(search={"objectives": ["accuracy", "latency"], "num_trials": 6, "population_size": 4},
                      latency={"warmup": 2, "runs": 5})
    run_search(cfg, tmp_path)
    run = load_run(tmp_path)
    done = run.completed
    for column in ("latency_ms", "baseline_latency_ms", "latency_ratio", "latency_iqr_ms"):
        assert (done[column] > 0).all() if column != "latency_iqr_ms" else (done[column] >= 0).all()
    assert (done["latency_reduction_pct"] == 100 * (1 - done["latency_ratio"])).all() or \
        ((done["latency_reduction_pct"] - 100 * (1 - done["latency_ratio"])).abs() < 1e-6).all()
    front = run.front()
    dominated = lambda a, b: b["accuracy"] >= a["accuracy"] and b["latency_ratio"] <= a["latency_ratio"] and (  # noqa: E731
        b["accuracy"] > a["accuracy"] or b["latency_ratio"] < a["latency_ratio"])
    on_front = set(front["trial_id"])
    for _, a in done.iterrows():  # the front is exactly the non-dominated set in (accuracy, latency)
        assert (a["trial_id"] in on_front) == (not any(dominated(a, b) for _, b in done.iterrows()))
    rep = report(tmp_path)
    assert {"pareto_latency.png", "flops_vs_latency.png"} <= set(rep.plots)
    fastest = select(tmp_path, prefer="latency")
    assert fastest.trial["latency_ratio"] == front["latency_ratio"].min()
