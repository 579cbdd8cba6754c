"""Allocators: budgets met on built models, the registry, sensitivity and loss-aware allocation."""
import copy

import numpy as np
import pytest
import torch

from pdsearch.cost import count_cost
from pdsearch.errors import PdsearchError
from pdsearch.planning import plan
from pdsearch.policy import Policy, SensitivityProfile
from pdsearch.policy.allocators.loss_aware import LossAwareSettings
from pdsearch.pruning import analyze, prune

from configs import tiny_config

PDS = ["PD1", "PD2", "PD3", "PD4", "PD5"]
# residual (resnet18/50, regnet with grouped convs), depthwise (mobilenet_v2/v3, efficientnet), plain (vgg11_bn)


ARCHITECTURES = [("resnet18", 64), ("resnet50", 64), ("mobilenet_v2", 64), ("mobilenet_v3_small", 64),
                 ("regnet_x_400mf", 64), ("efficientnet_b0", 64), ("vgg11_bn", 32)]


def reduction(p, metric):
    return (p.flops if metric == "flops" else p.params)["reduction_pct"]


@pytest.mark.parametrize("model,size", ARCHITECTURES)
def test_data_free_allocators_meet_budgets_within_half_a_point(planners, model, size):
    planner = planners(model, size)
    shapes = [{"pd": pd} for pd in PDS] + [{"pd": None, "slope": 0.4, "curvature": -0.3}]
    for metric in ("flops", "params"):
        for budget in (30, 50, 70):
            for shape in shapes:
                p = planner.plan(Policy(budget=budget, budget_metric=metric, **shape))
                assert abs(reduction(p, metric) - budget) <= 0.5, (model, metric, budget, shape, reduction(p, metric))
                # the equivalent GPR is the homogeneous rate of the same cost (to a channel: grouped convs step coarsely)
                same = planner.plan(Policy(gpr=p.gpr, pd="PD1"))
                assert abs(reduction(same, metric) - budget) <= 3.0


@pytest.mark.parametrize("model,size,pd", [("resnet18", 64, "PD3"), ("mobilenet_v2", 64, "PD5")])
def test_budget_holds_on_the_really_pruned_model(planners, model, size, pd):
    planner = planners(model, size)
    p = planner.plan(Policy(budget=50, budget_metric="flops", pd=pd))
    pruned = prune(analyze(copy.deepcopy(planner.structure.model), size), p.rates)
    counted = count_cost(pruned, planner.structure.example_input)
    measured = 100 * (1 - counted.flops / planner.cost_model.base.flops)
    assert abs(measured - 50) <= 0.5 and counted.flops == pytest.approx(p.flops["pruned"], rel=1e-3)


def test_flexiprune_tables_meet_budgets_within_a_point(planners):
    planner = planners("vgg16")
    for metric in ("flops", "params"):
        for budget in (30, 50, 70):
            for pd in PDS:
                p = planner.plan(Policy(budget=budget, budget_metric=metric, pd=pd, mode="flexiprune"))
                assert abs(reduction(p, metric) - budget) <= 1.0
                assert all(round(r * 100, 6).is_integer() for r in p.rates[:-2])  # table rates stay whole percents


def test_unreachable_budget_names_the_best_reachable_value(planners):
    with pytest.raises(PdsearchError, match=r"unreachable .* the most this model allows is 9\d\.\d\d%"):
        planners("resnet20").plan(Policy(budget=99.9, pd="PD2"))


def test_policy_takes_a_gpr_or_a_budget():
    with pytest.raises(PdsearchError, match="not both"):
        Policy(gpr=30, budget=50)
    with pytest.raises(PdsearchError, match="not neither"):
        Policy(pd="PD1")
    with pytest.raises(PdsearchError, match=r"budget must be a number in \(0, 100\)"):
        Policy(budget=100)
    with pytest.raises(PdsearchError, match="budget metric"):
        Policy(budget=50, budget_metric="energy")
    assert Policy.from_json(Policy(budget=40, pd="sensitivity", options={"blend": 0.2}).to_json()).options == {"blend": 0.2}


def test_plan_api_takes_budgets():
    p = plan("resnet20", flops_reduction=40, pd=3, input_size=32)
    assert abs(p.flops["reduction_pct"] - 40) <= 0.5 and p.to_dict()["budget"] == 40
    with pytest.raises(PdsearchError, match="not both"):
        plan("resnet20", gpr=30, params_reduction=40, input_size=32)


def test_data_driven_allocators_refuse_to_plan_without_measurements(planners):
    with pytest.raises(PdsearchError, match="sensitivity profile"):
        planners("resnet20").plan(Policy(budget=40, pd="sensitivity"))
    with pytest.raises(PdsearchError, match="trained baseline"):
        planners("resnet20").plan(Policy(budget=40, pd="loss_aware"))


def synthetic_profile(planner, fragile: int) -> SensitivityProfile:
    """Every group tolerant except ``fragile``, whose loss climbs steeply."""
    rates = [round(0.1 * i, 1) for i in range(1, 10)]
    loss = [[1.0 + (5.0 if g == fragile else 0.2) * r for r in rates] for g in range(len(planner.groups))]
    return SensitivityProfile(groups=[g.name for g in planner.groups], rates=rates, accuracy=[[90.0] * 9] * len(loss),
                              loss=loss, base_accuracy=90.0, base_loss=1.0, criterion="l1")


def test_sensitivity_spares_the_sensitive_group_and_meets_the_budget(planners):
    planner = planners("resnet20")
    profile = synthetic_profile(planner, fragile=3)
    p = planner.plan(Policy(budget=50, pd="sensitivity"), profile=profile)
    assert abs(p.flops["reduction_pct"] - 50) <= 0.5
    assert p.rates[3] == min(p.rates) and p.rates[3] < np.median(p.rates) / 2
    uniform = planner.plan(Policy(budget=50, pd="sensitivity", options={"blend": 1.0}), profile=profile)
    assert np.ptp(uniform.rates) < 0.1  # blend 1: homogeneous again, within channel rounding


class FakeProbe:
    """Loss rises by ``cost[g]`` per channel removed from group g, whatever the criterion, except fpgm is free on group 0."""

    def __init__(self, cost):
        self.cost, self.removed, self.retrains = cost, {}, 0

    def _loss(self, removed):
        return sum(self.cost[g] * n for g, (c, n) in removed.items() if not (g == 0 and c == "fpgm"))

    def loss(self):
        return self._loss(self.removed)

    def loss_with(self, group, criterion, removed):
        return self._loss({**self.removed, group: (criterion, removed)})

    def commit(self, group, criterion, removed):
        self.removed[group] = (criterion, removed)

    def retrain(self):
        self.retrains += 1


def test_loss_aware_prunes_where_loss_rises_least_and_records_criteria(planners):
    planner = planners("resnet20")
    cost = [1.0] * len(planner.groups)
    cost[5] = 100.0  # a group that must be spared
    probe = FakeProbe(cost)
    settings = {"loss_aware": LossAwareSettings(pool=["l1", "fpgm"], slice=0.0625, retrain_every=10, retrain_steps=1)}
    p = planner.plan(Policy(budget=50, pd="loss_aware"), settings=settings, probe=lambda s: probe)
    assert abs(p.flops["reduction_pct"] - 50) <= 0.5
    assert p.rates[5] == 0.0 and p.criteria[0] == "fpgm" and len(p.criteria) == len(planner.groups)
    assert probe.retrains >= 3 and p.allocation_seconds > 0


@pytest.mark.parametrize("model,size", [("resnet20", 32), ("mobilenet_v2", 32), ("small_cnn", 16)])
def test_switching_channels_off_computes_what_removing_them_does(model, size):
    """The probe's cheap stand-in for pruning gives the pruned model's outputs exactly."""
    from pdsearch.models import build_model
    from pdsearch.pruning import lowest_channels
    from pdsearch.pruning.importance import GroupScorer
    from pdsearch.trial.channel_switch import ChannelSwitch

    torch.manual_seed(0)
    net = build_model(model, num_classes=10)
    for m in net.modules():  # non-trivial BatchNorm statistics, so a zero input is not a zero output
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    switch = ChannelSwitch(net, size, 3, torch.device("cpu"))
    x = torch.randn(4, 3, size, size)
    for g in range(0, len(switch.groups), 3):  # one group at a time: prune() ranks later groups on a changed model
        group = switch.groups[g]
        rates = np.zeros(len(switch.groups))
        rates[g] = 0.5
        saved = switch.switch_off(g, lowest_channels(GroupScorer("l1")(switch.full[g]), group, group.channels_to_prune(0.5)))
        pruned = prune(analyze(copy.deepcopy(net), size), rates, "l1")
        with torch.no_grad():
            assert torch.allclose(switch.model.eval()(x), pruned.eval()(x), atol=1e-4), group.name
        switch.restore(saved)


@pytest.mark.parametrize("model", ["resnet50", "mobilenet_v2"])
def test_round_to_keeps_multiples_of_eight_and_the_cost_model_exact(planners, model):
    planner = planners(model, 64)
    for policy in (Policy(gpr=40, pd="PD2", round_to=8), Policy(budget=50, pd="PD3", round_to=8)):
        p = planner.plan(policy)
        assert all(layer["kept"] % 8 == 0 for layer in p.layers if layer["channels"] >= 8)
        if policy.budget:
            assert abs(p.flops["reduction_pct"] - 50) <= 0.5
        pruned = prune(analyze(copy.deepcopy(planner.structure.model), 64), p.rates)
        for layer in p.layers:  # the built model keeps exactly those channels
            root = pruned.get_submodule(layer["name"])
            assert (root.out_channels if hasattr(root, "out_channels") else root.out_features) == layer["kept"]
        counted = count_cost(pruned, planner.structure.example_input)
        assert counted.flops == pytest.approx(p.flops["pruned"], rel=5e-4)
        assert counted.params == p.params["pruned"]


def untraceable(self, root):
    raise RuntimeError("as if fx could not trace it")


@pytest.mark.parametrize("model_name", ["small_cnn", "resnet20", "timm/mobilenetv3_small_050"])
def test_the_profile_runs_only_what_follows_each_group_and_measures_what_the_whole_model_does(model_name, monkeypatch):
    """Cut at each group's first producer (torch.fx), in channels_last, against the whole model as it ran before."""
    from pdsearch.planning import Planner
    from pdsearch.policy.allocators.sensitivity import SensitivitySettings
    from pdsearch.trial import channel_switch, profile
    from pdsearch.trial.baseline import model_and_data

    if model_name.startswith("timm/"):
        pytest.importorskip("timm")
    model, data = model_and_data(tiny_config(model={"name": model_name, "kwargs": {}}, data={"input_size": 8}))
    assert channel_switch.PrefixSplit(model).traced is not None  # the cut path, not the fallback
    settings = SensitivitySettings(rates=[0.3, 0.8], bn_batches=1, eval_batches=1)
    cut = profile.measure_sensitivity(model, data, "l1", settings, torch.device("cpu"))
    monkeypatch.setattr(channel_switch._Tracer, "trace", untraceable)  # as every measurement ran before:
    monkeypatch.setattr(profile, "PROFILE_LAYOUT", torch.contiguous_format)  # whole, in the default layout
    whole = profile.measure_sensitivity(model, data, "l1", settings, torch.device("cpu"))
    assert cut.groups == whole.groups
    np.testing.assert_allclose(cut.loss, whole.loss, rtol=1e-4, atol=1e-5)
    one_image = 100.0 / 64  # an image on the edge may flip with float rounding
    assert np.abs(np.array(cut.accuracy) - np.array(whole.accuracy)).max() <= one_image
    planner = Planner(copy.deepcopy(model), num_classes=10, input_size=8, in_channels=data.in_channels)
    for budget in (30, 60):  # and the allocations read from them are the same
        policy = Policy(budget=budget, pd="sensitivity")
        assert planner.plan(policy, profile=cut).rates == planner.plan(policy, profile=whole).rates


@pytest.mark.slow  # (a trained baseline, three profiles)
def test_the_default_batchnorm_batches_move_the_profile_less_than_another_seed_does(baseline):
    """BatchNorm re-estimated on 5 batches rather than 10: equally good, as the measurement's own spread says."""
    from pdsearch.planning import Planner
    from pdsearch.policy.allocators.sensitivity import SensitivitySettings
    from pdsearch.trial import profile
    from pdsearch.trial.baseline import model_and_data

    model, data = model_and_data(tiny_config())
    model.load_state_dict(baseline.state_dict)

    def measure(bn_batches: int, seed: int):
        settings = SensitivitySettings(bn_batches=bn_batches)
        return profile.measure_sensitivity(model, data, "l1", settings, torch.device("cpu"), seed=seed)

    reference, other_seed, default = measure(10, 0), measure(10, 1), measure(SensitivitySettings().bn_batches, 0)
    assert SensitivitySettings().bn_batches < 10

    def loss_moved(profile):
        return np.abs(np.array(profile.loss) - np.array(reference.loss)).max()

    assert 0 < loss_moved(default) < loss_moved(other_seed) / 2
    planner = Planner(copy.deepcopy(model), num_classes=10, input_size=8, in_channels=data.in_channels)

    def rates_moved(profile, budget):
        policy = Policy(budget=budget, pd="sensitivity", options={"blend": 0.0})
        return np.abs(np.array(planner.plan(policy, profile=profile).rates) -
                      np.array(planner.plan(policy, profile=reference).rates)).max()

    for budget in (30, 50, 70):
        assert rates_moved(default, budget) <= rates_moved(other_seed, budget) + 1e-9


@pytest.mark.parametrize("model_name", ["small_cnn", "resnet20"])
def test_loss_aware_run_only_after_each_group_chooses_what_the_whole_model_chooses(model_name, monkeypatch):
    from pdsearch.planning import Planner
    from pdsearch.trial import channel_switch, loss_probe
    from pdsearch.trial.baseline import model_and_data

    model, data = model_and_data(tiny_config(model={"name": model_name, "kwargs": {}}, data={"input_size": 16}))
    planner = Planner(copy.deepcopy(model), num_classes=10, input_size=16, in_channels=data.in_channels)
    settings = {"loss_aware": LossAwareSettings(pool=["l1", "fpgm"], retrain_every=20, retrain_steps=2)}

    def allocate():
        probe = loss_probe.loss_probe_factory(model, data, 0.02, torch.device("cpu"))
        return planner.plan(Policy(budget=60, pd="loss_aware"), settings=settings, probe=probe)

    cut = allocate()
    monkeypatch.setattr(channel_switch._Tracer, "trace", untraceable)
    whole = allocate()
    assert cut.rates == whole.rates and cut.criteria == whole.criteria
    assert abs(cut.flops["reduction_pct"] - 60) <= 0.5


def test_a_loss_aware_path_to_the_largest_budget_holds_every_smaller_allocation():
    """The search measures one greedy path per run; each trial's allocation is its prefix, exactly the direct one."""
    from pdsearch.planning import Planner
    from pdsearch.policy.allocators.loss_aware import LossAware
    from pdsearch.trial import loss_probe
    from pdsearch.trial.baseline import model_and_data

    model, data = model_and_data(tiny_config(data={"input_size": 16}))
    planner = Planner(copy.deepcopy(model), num_classes=10, input_size=16, in_channels=data.in_channels)
    settings = {"loss_aware": LossAwareSettings(pool=["l1", "fpgm"], retrain_every=15, retrain_steps=2)}
    built = []

    def probe(s):
        built.append(s)
        return loss_probe.loss_probe_factory(model, data, 0.02, torch.device("cpu"))(s)

    direct = {b: planner.plan(Policy(budget=b, pd="loss_aware"), settings=settings, probe=probe) for b in (30, 60)}
    largest = Policy(budget=60, pd="loss_aware")
    problem = planner.problem(largest, settings=settings, probe=probe)
    path = LossAware().path(largest, problem, 0.60)
    assert len(built) == 3 and not path.exhausted and path.steps[-1].reduction >= 0.5995
    paths = {"loss_aware": {LossAware().path_key(largest, problem): path}}
    for budget, alone in direct.items():
        read = planner.plan(Policy(budget=budget, pd="loss_aware"), settings=settings, paths=paths, probe=probe)
        assert read.rates == alone.rates and read.criteria == alone.criteria
    assert len(built) == 3  # read from the path: no probe built, no loss measured
    planner.plan(Policy(budget=30, pd="loss_aware", seed=1), settings=settings, paths=paths, probe=probe)
    assert len(built) == 4  # another seed's greedy is another path: measured
