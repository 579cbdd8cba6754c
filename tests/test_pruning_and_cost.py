"""Real pruning shrinks models that still train; the analytic cost equals fvcore's count."""
import copy

import numpy as np
import pytest
import torch

from pdsearch.cost import count_cost
from pdsearch.errors import PdsearchError
from pdsearch.models import build_model
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune

ARCHITECTURES = [
    ("resnet20", 32), ("resnet56", 32), ("resnet18", 32), ("resnet50", 64), ("vgg11", 32), ("vgg16", 32),
    ("vgg16_bn", 32), ("alexnet", 64), ("mobilenet_v2", 64), ("densenet121", 32), ("efficientnet_b0", 64),
    ("regnet_x_400mf", 64), ("small_cnn", 16), ("user_models:tiny_net", 16),
]


def prune_copy(planner, rates, criterion="l1", **kwargs):
    structure = analyze(copy.deepcopy(planner.structure.model), planner.input_size)
    return prune(structure, rates, criterion, **kwargs), structure


SLOW_TO_COUNT = {"vgg16", "vgg16_bn", "densenet121"}  # 10-14 s each; vgg11 and the rest cover the default run


@pytest.mark.parametrize("model,size", [pytest.param(m, s, marks=pytest.mark.slow) if m in SLOW_TO_COUNT else (m, s)
                                        for m, s in ARCHITECTURES])
def test_analytic_cost_equals_fvcore_of_pruned_model(planners, model, size):
    planner = planners(model, size)
    for policy in (Policy(gpr=30, pd="PD2"), Policy(gpr=55, pd="PD5")):
        rates = planner.rates(policy)
        predicted_flops, predicted_params = planner.cost(rates)
        pruned, structure = prune_copy(planner, rates)
        counted = count_cost(pruned, structure.example_input)
        assert counted.flops < 0.9 * planner.cost_model.base.flops  # it really shrank
        assert predicted_flops == pytest.approx(counted.flops, rel=0.005)
        assert predicted_params == pytest.approx(counted.params, rel=0.005)
        # still runs forward and backward
        pruned.train()
        out = pruned(torch.randn(2, 3, size, size))
        out.sum().backward()
        assert out.shape == (2, 10)


def test_filters_are_really_removed(planners):
    planner = planners("vgg11")
    plan = planner.plan(Policy(gpr=50, pd="PD1"))
    pruned, _ = prune_copy(planner, plan.rates)
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [layer["kept"] for layer in plan.layers if layer["name"].startswith("features")]


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm", "random", "taylor", "bn_scale"])
def test_criteria(planners, criterion):
    planner = planners("resnet20")
    rates = planner.rates(Policy(gpr=40, pd="PD1"))
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))] * 2
    pruned, _ = prune_copy(planner, rates, criterion, batches=batches)
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def kept_filters(planner, criterion, seed):
    model = copy.deepcopy(planner.structure.model)
    reference = model.conv1.weight.detach().clone()
    structure = analyze(model, planner.input_size)
    prune(structure, [0.5] * len(structure.groups), criterion, seed=seed)
    w = model.conv1.weight.detach()
    return tuple(int((reference - row).abs().sum(dim=(1, 2, 3)).argmin()) for row in w)


def test_random_criterion_is_seeded(planners):
    planner = planners("resnet20")
    assert kept_filters(planner, "random", 1) == kept_filters(planner, "random", 1)
    assert kept_filters(planner, "random", 1) != kept_filters(planner, "random", 2)


def test_l1_keeps_the_largest_filters(planners):
    planner = planners("small_cnn", 16)
    model = copy.deepcopy(planner.structure.model)
    with torch.no_grad():
        model.features[0].weight.mul_(torch.linspace(0.1, 3.2, 32).view(-1, 1, 1, 1))
    structure = analyze(model, 16)
    rates = [0.5 if g.name == "features.0" else 0.0 for g in structure.groups]
    prune(structure, rates, "l1")
    assert model.features[0].out_channels == 16
    assert model.features[0].weight.abs().sum(dim=(1, 2, 3)).min() > 1.0  # only the scaled-up half is left


def test_taylor_needs_batches(planners):
    planner = planners("resnet20")
    with pytest.raises(PdsearchError, match="needs data batches"):
        prune_copy(planner, [0.3] * len(planner.groups), "taylor")


def test_resnet_stage_is_one_group(planners):
    names = [g.name for g in planners("resnet20").groups]
    # 9 block-inner convs + 3 residual streams
    assert len(names) == 12


def test_unprunable_model_is_a_clear_error():
    with pytest.raises(PdsearchError, match="cannot be pruned structurally"):
        analyze(build_model("shufflenet_v2_x0_5"), 64)


def test_user_factory_errors():
    with pytest.raises(PdsearchError, match="cannot import model factory"):
        build_model("no_such_pkg.models:net")
    with pytest.raises(PdsearchError, match="not an nn.Module"):
        build_model("user_models:not_a_model")
    with pytest.raises(PdsearchError, match="unknown model"):
        build_model("resnet9000")


def test_channel_rounding_keeps_at_least_one(planners):
    group = planners("resnet20").groups[0]
    assert group.channels - group.channels_to_prune(0.99) >= 1
    assert group.channels_to_prune(0.0) == 0
    with pytest.raises(PdsearchError):
        group.channels_to_prune(1.0)


def test_group_depth_positions_span_zero_to_one(planners):
    positions = np.array([g.position for g in planners("resnet50", 64).groups])
    assert positions[0] == 0.0 and positions[-1] == 1.0 and np.all(np.diff(positions) >= 0)


def test_cosine_criterion_drops_duplicated_filters_first():
    from pdsearch.pruning.importance import importance

    conv = torch.nn.Conv2d(3, 6, 3)
    with torch.no_grad():
        conv.weight[4] = conv.weight[1] * 2.0  # parallel to filter 1
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Conv2d(6, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    structure = analyze(model, 8)
    from pdsearch.pruning import full_group

    score = importance("cosine")(full_group(structure, structure.groups[0]))
    assert set(torch.argsort(score)[:2].tolist()) == {1, 4}
