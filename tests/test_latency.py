"""Measured latency: a model with most of its FLOPs removed runs faster than its baseline, side by side."""
import copy

import torch

from pdsearch.cost.latency import compare, measure_latency
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune


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
