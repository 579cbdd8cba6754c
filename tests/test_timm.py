"""timm models by name (model: {name: timm/NAME}): planned, really pruned, searched; a clear line without timm."""
import copy
import sys

import pytest

from pdsearch.cli import main
from pdsearch.cost import count_cost
from pdsearch.errors import PdsearchError
from pdsearch.models import build_model
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, check_prunable, prune

from configs import tiny_config

pytest.importorskip("timm")  # the [test] extra installs it; CI runs these


def test_a_timm_model_by_name_meets_its_budget_and_fvcore_counts_the_plan():
    planner = Planner("timm/resnet26d", num_classes=10, input_size=64)
    plan = planner.plan(Policy(budget=50, pd="PD3"))
    assert abs(plan.flops["reduction_pct"] - 50) <= 0.5
    pruned = prune(analyze(copy.deepcopy(planner.structure.model), 64), plan.rates)
    cost = count_cost(pruned, planner.structure.example_input)
    assert (cost.flops, cost.params) == (plan.flops["pruned"], plan.params["pruned"])


def test_timm_models_take_grey_input_and_kwargs():
    model = build_model("timm/resnet10t", num_classes=7, in_channels=1, drop_rate=0.1)
    assert model.conv1[0].in_channels == 1 and model.get_classifier().out_features == 7 and model.drop_rate == 0.1


@pytest.mark.slow
def test_a_search_on_a_timm_model_runs_end_to_end(ray_session, tmp_path, capsys):
    config = tmp_path / "timm.yaml"
    config.write_text(tiny_config(model={"name": "timm/resnet10t", "kwargs": {}}, data={"input_size": 16},
                                  search={"num_trials": 2}).to_yaml())
    assert main(["search", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    assert "trials: 2 (2 ok," in capsys.readouterr().out


def test_unknown_names_and_a_missing_timm_are_one_line(monkeypatch, capsys):
    with pytest.raises(PdsearchError, match=r"unknown timm model 'resnt26d' \(did you mean resnet26d"):
        build_model("timm/resnt26d")
    monkeypatch.setitem(sys.modules, "timm", None)  # as if it were not installed
    assert main(["plan", "--model", "timm/resnet26d", "--gpr", "30"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['pdsearch: error: model timm/resnet26d needs timm: pip install -e ".[timm]"']
    assert main(["models"]) == 0
    assert 'timm (0): (timm is not installed: pip install -e ".[timm]")' in capsys.readouterr().out


def test_the_models_verb_lists_the_names_by_source(capsys):
    assert main(["models", "--filter", "resnet2"]) == 0
    out = capsys.readouterr().out
    assert "pdsearch (1): resnet20" in out and "timm/resnet26d" in out


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_pretrained_weights_for_other_classes_load_all_but_the_classifier(tmp_path, filename):
    """A timm download (1000 classes, say) as baseline.checkpoint of a 10-class search: the head is re-initialised."""
    import torch
    from safetensors.torch import save_file

    from pdsearch.trial.baseline import build_baseline, load_checkpoint

    pretrained = build_model("timm/resnet10t", num_classes=100, in_channels=1)
    path = tmp_path / filename
    state = {k: v.contiguous() for k, v in pretrained.state_dict().items()}
    save_file(state, str(path)) if filename.endswith(".safetensors") else torch.save(state, path)
    model = build_model("timm/resnet10t", num_classes=10, in_channels=1)
    assert sorted(load_checkpoint(model, str(path))) == ["fc.bias [100]", "fc.weight [100, 512]"]
    assert torch.equal(model.conv1[0].weight, pretrained.conv1[0].weight) and model.fc.out_features == 10
    with pytest.raises(PdsearchError, match="does not fit model ResNet: 1 unexpected key"):
        torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
        load_checkpoint(model, str(tmp_path / "extra.pt"))

    cfg = tiny_config(model={"name": "timm/resnet10t", "kwargs": {}}, data={"input_size": 16},
                      baseline={"checkpoint": str(path), "epochs": 1})
    baseline = build_baseline(cfg)  # the new head is trained with the rest for baseline.epochs
    assert sorted(baseline.skipped_keys) == ["fc.bias [100]", "fc.weight [100, 512]"]
    assert not torch.equal(baseline.state_dict["conv1.0.weight"], pretrained.conv1[0].weight)


# one small model of each family, at 32x32 (resnet-d, efficientnet, mobilenetv3, regnety, convnext, dla, repvgg)
EXACT_FAMILIES = ["resnet26d", "efficientnet_b0", "mobilenetv3_small_050", "regnety_002", "convnext_atto", "dla34",
                  "repvgg_a0"]


@pytest.mark.parametrize("name", EXACT_FAMILIES)
def test_timm_families_meet_their_budget_and_fvcore_counts_the_really_pruned_model(name):
    """BatchNormAct2d (a BatchNorm with its activation inside) and ConvNeXt's layer scale are costed as pruned."""
    planner = Planner(f"timm/{name}", num_classes=10, input_size=32, in_channels=1)
    plan = planner.plan(Policy(budget=50, pd="PD3"))
    assert abs(plan.flops["reduction_pct"] - 50) <= 0.5
    pruned = prune(analyze(copy.deepcopy(planner.structure.model), 32, 1), plan.rates)
    cost = count_cost(pruned, planner.structure.example_input)
    assert (cost.flops, cost.params) == (plan.flops["pruned"], plan.params["pruned"])


@pytest.mark.parametrize("name, reason, limit", [
    # the group search finishes on these: the default limit stays, so only the real refusal can fire on a busy machine
    ("ghostnet_050", "pruned model fails to run", None),  # a pruned branch keeps no channel
    ("cspresnet50", "Torch-Pruning failed removing channels of stages.0.blocks.0", None),  # split halves mis-indexed
    ("rexnet_100", "search for its channel groups did not finish in 2 s", 2.0),  # unbounded: any limit fires
])
def test_timm_families_that_cannot_be_pruned_are_refused_with_a_reason(name, reason, limit, monkeypatch):
    if limit is not None:
        monkeypatch.setattr("pdsearch.pruning.structure.GROUP_SEARCH_LIMIT_S", limit)
    with pytest.raises(PdsearchError, match="cannot be pruned structurally: .*" + reason):
        check_prunable(Planner(f"timm/{name}", num_classes=10, input_size=32, in_channels=1).structure)
