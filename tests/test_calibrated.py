"""Calibrated mode: PD shapes over depth, equal cost at a GPR."""
import numpy as np
import pytest

from pdsearch.errors import PdsearchError
from pdsearch.policy import Policy, normalize_pd

PDS = ["PD1", "PD2", "PD3", "PD4", "PD5"]


def rates_by_position(plan):
    pos = np.array([layer["position"] for layer in plan.layers])
    rates = np.array(plan.rates)
    order = np.argsort(pos, kind="stable")
    return pos[order], rates[order]


@pytest.mark.parametrize("model,size", [("resnet20", 32), ("vgg16_bn", 32), ("mobilenet_v2", 64), ("small_cnn", 16)])
@pytest.mark.parametrize("gpr", [30, 50])
def test_pds_cost_the_same_flops_at_a_gpr(planners, model, size, gpr):
    planner = planners(model, size)
    reductions = [planner.plan(Policy(gpr=gpr, pd=pd)).flops["reduction_pct"] for pd in PDS]
    assert max(reductions) - min(reductions) < 1.0, reductions
    # and the homogeneous cost follows 1-(1-g)^2 roughly for chain-like networks
    assert 100 * (1 - (1 - gpr / 100) ** 2) - 8 < reductions[0] < 100 * (1 - (1 - gpr / 100) ** 2) + 8


def test_params_and_mean_targets(planners):
    planner = planners("resnet20")
    params = [planner.plan(Policy(gpr=40, pd=pd, target="params")).params["reduction_pct"] for pd in PDS]
    assert max(params) - min(params) < 1.0
    for pd in PDS:
        # the solved rates average 0.40; whole channels (16 at least per layer) move that by under 1/16
        assert np.mean(planner.plan(Policy(gpr=40, pd=pd, target="mean")).rates) == pytest.approx(0.40, abs=1 / 16)
    flops = [planner.plan(Policy(gpr=40, pd=pd, target="mean")).flops["reduction_pct"] for pd in PDS]
    assert max(flops) - min(flops) > 1.0  # a mean-rate target does not equalise FLOPs


def test_shapes_follow_their_names(planners):
    planner = planners("vgg16")
    _, pd2 = rates_by_position(planner.plan(Policy(gpr=40, pd="PD2")))
    _, pd3 = rates_by_position(planner.plan(Policy(gpr=40, pd="PD3")))
    assert np.all(np.diff(pd2) >= -1e-9) and pd2[-1] > pd2[0] + 0.2  # bottom-up: rises with depth
    assert np.all(np.diff(pd3) <= 1e-9) and pd3[0] > pd3[-1] + 0.2  # top-down: falls with depth
    pos, pd4 = rates_by_position(planner.plan(Policy(gpr=40, pd="PD4")))
    middle = np.abs(pos - 0.5) < 0.2
    assert pd4[middle].min() > max(pd4[0], pd4[-1])  # low-high-low
    _, pd5 = rates_by_position(planner.plan(Policy(gpr=40, pd="PD5")))
    assert pd5[middle].max() < min(pd5[0], pd5[-1])  # high-low-high
    plan = planner.plan(Policy(gpr=40, pd="PD1"))
    whole_channels = [np.ceil(0.4 * layer["channels"] - 1e-9) / layer["channels"] for layer in plan.layers]
    assert plan.rates == pytest.approx(whole_channels)  # 40% of every layer, in whole channels


def test_rates_are_capped_and_excess_redistributed(planners):
    planner = planners("vgg16")
    free = planner.plan(Policy(gpr=60, pd="PD2", max_rate=0.95))
    capped = planner.plan(Policy(gpr=60, pd="PD2", max_rate=0.75))
    assert max(free.rates) > 0.75
    # the cap holds for the solved rate; the channels removed may exceed it by under one channel
    assert all(layer["rate"] <= 0.75 + 1 / layer["channels"] for layer in capped.layers)
    assert max(capped.rates) < max(free.rates)
    assert capped.flops["reduction_pct"] == pytest.approx(free.flops["reduction_pct"], abs=1.0)
    assert min(capped.rates) > min(free.rates)  # the shallow layers took the excess


def test_continuous_shapes_lie_between_named_points(planners):
    planner = planners("vgg16")
    half = planner.plan(Policy(gpr=40, pd=None, slope=0.3))
    _, r = rates_by_position(half)
    _, pd2 = rates_by_position(planner.plan(Policy(gpr=40, pd="PD2")))
    assert r[-1] - r[0] > 0 and r[-1] - r[0] < pd2[-1] - pd2[0]
    assert half.to_dict()["pd"] is None and half.policy.label == "shape(+0.30,+0.00)"


def test_impossible_shape_or_gpr_is_an_error(planners):
    planner = planners("resnet20")
    with pytest.raises(PdsearchError, match="exceeds the per-layer maximum"):
        planner.plan(Policy(gpr=95, pd="PD2"))
    with pytest.raises(PdsearchError, match="cannot match"):
        planner.plan(Policy(gpr=85, pd=None, slope=3.0, max_rate=0.9))


def test_gpr_zero_prunes_nothing(planners):
    plan = planners("resnet20").plan(Policy(gpr=0, pd="PD3"))
    assert set(plan.rates) == {0.0} and plan.flops["reduction_pct"] == 0.0


def test_policy_json_round_trip():
    for policy in (Policy(gpr=37.5, pd="top-down", criterion="fpgm", seed=3),
                   Policy(gpr=20, pd=None, slope=-0.25, curvature=0.4, target="params", max_rate=0.8)):
        assert Policy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize("value,expected", [(2, "PD2"), ("3", "PD3"), ("pd4", "PD4"), ("high-low-high", "PD5"), ("bottom_up", "PD2")])
def test_pd_names(value, expected):
    assert normalize_pd(value) == expected


@pytest.mark.parametrize("kwargs,message", [
    (dict(gpr=100), "GPR must be"), (dict(gpr=-1), "GPR must be"), (dict(gpr=float("nan")), "GPR must be"),
    (dict(gpr=10, pd="PD9"), "unknown pruning distribution"), (dict(gpr=10, criterion="l3"), "unknown criterion"),
    (dict(gpr=10, mode="greedy"), "unknown mode"), (dict(gpr=10, target="latency"), "calibration target"),
    (dict(gpr=10, max_rate=1.0), "max_rate"),
])
def test_bad_policies(kwargs, message):
    with pytest.raises(PdsearchError, match=message):
        Policy(**kwargs)


def test_unknown_policy_field():
    with pytest.raises(PdsearchError, match="unknown policy field"):
        Policy.from_dict({"gpr": 10, "speed": 3})


@pytest.mark.parametrize("model,size", [("resnet20", 32), ("small_cnn", 16)])
def test_stated_rates_remove_the_stated_channels(planners, model, size):
    """A rate read back from JSON prunes exactly the channels the plan says (no boundary drift)."""
    import json

    planner = planners(model, size)
    for gpr in (10, 35, 60):
        for pd in PDS:
            plan = planner.plan(Policy(gpr=gpr, pd=pd))
            layers = json.loads(json.dumps(plan.layers))
            for group, layer in zip(planner.groups, layers):
                assert layer["channels"] - group.channels_to_prune(layer["rate"]) == layer["kept"]
