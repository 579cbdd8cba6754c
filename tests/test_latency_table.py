"""The latency model of the target: samples, interpolation, calibration, keys, budgets, the CLI verb, ONNX export."""
import copy
import dataclasses
import json
import shlex

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pdsearch.cli import main
from pdsearch.cost.latency import compare, export_onnx, onnxruntime_session, torch_session
from pdsearch.cost.latency_table import LatencyTable, LayerTable, kept_channels
from pdsearch.cost.layer_shapes import layer_shapes, structure_digest
from pdsearch.cost.table_build import ANCHORS, IRREGULAR_ANCHORS, anchor_rates, axis_samples, build_table
from pdsearch.errors import PdsearchError
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune

from configs import tiny_table


def synthetic(planner: Planner, block: int = 8, scale: float = 1.0, reorder_ms: float = 0.0,
              off_factor: float | None = None) -> LatencyTable:
    """A table whose layers cost cin·cout·HW (bilinear, so interpolation is exact between samples): no timing;
    with ``off_factor``, an off grid (one channel short of each sample) costing that many times more."""
    shapes = layer_shapes(planner.structure.model, planner.structure.example_input)
    tables = {}
    for s in shapes.values():
        ins = [0] if s.depthwise else axis_samples(s.in_channels, 4)[0]
        outs = [s.out_channels] if s.kind == "se" else axis_samples(s.out_channels, 4)[0]
        cost = (lambda i, o, s=s: o * s.height * s.width * 1e-4) if s.depthwise else \
            (lambda i, o, s=s: i * o * s.height * s.width * 1e-6)
        grids = {"aligned": {"ins": ins, "outs": outs, "ms": [[cost(i, o) for o in outs] for i in ins]}}
        if off_factor:
            ins_o = ins if s.depthwise or s.stem else [i - 1 for i in ins]
            outs_o = [o - 1 for o in outs]
            grids["off"] = {"ins": ins_o, "outs": outs_o, "ms": [[off_factor * cost(i, o) for o in outs_o]
                                                                  for i in ins_o]}
        tables[s.key] = LayerTable(s, grids, block)
    key = {"model": planner.model_name, "structure": structure_digest(shapes), "input_size": 32, "batch_size": 1,
           "runtime": "onnxruntime", "threads": 2, "device": "test"}
    full = sum(tables[s.key](s.in_channels, s.out_channels) for s in shapes.values())
    return LatencyTable(key, {n: s.key for n, s in shapes.items()}, tables, full + 1.0, block, scale, reorder_ms)


def test_axis_samples_step_by_eight_one_short_of_it_and_keep_conv_groups():
    aligned, off = axis_samples(64, 5)
    assert aligned == [8, 16, 32, 48, 64] and off == [15, 31, 47, 63]
    aligned, off = axis_samples(10, 5)  # a classifier's outputs: its own count and one step
    assert aligned == [8, 10] and off == []
    aligned, off = axis_samples(96, 4, multiple=3)  # a grouped conv keeps its groups
    assert all(c % 3 == 0 for c in aligned + off) and aligned[-1] == 96


def test_int8_depthwise_layers_are_sampled_and_read_on_their_own_kernels_multiple(planners, tmp_path):
    from pdsearch.catalog.runtimes import RUNTIMES
    from pdsearch.cost.layer_shapes import LayerShape
    from pdsearch.cost.table_build import _grid_points

    ort = RUNTIMES["onnxruntime"]
    assert ort.multiple("int8", depthwise=True) == 16 and ort.multiple("int8") == 8 and ort.multiple("fp32", True) == 4
    depthwise = LayerShape("conv", 144, 144, (3, 3), (1, 1), (1, 1), (1, 1), 144, 56, 56)
    grids = _grid_points(depthwise, 6, 16)
    assert all(c % 16 == 0 or c == 144 for c in grids["aligned"][1]) and all(c % 16 == 15 for c in grids["off"][1])
    # 72 channels are off 16: the unpruned layer is read from the off grid, which holds it
    assert 72 in _grid_points(dataclasses.replace(depthwise, in_channels=72, out_channels=72, groups=72), 6, 16)["off"][1]
    table = synthetic(planners("mobilenet_v2", 32))
    for t in table.tables.values():
        t.block = 16 if t.shape.depthwise else 8
    loaded = LatencyTable.load(table.save(tmp_path / "t.json"))
    dw = next(t for t in loaded.tables.values() if t.shape.depthwise)
    assert dw.block == 16 and not dw.aligned(104, 104) and dw.aligned(96, 96)
    assert {t.block for t in loaded.tables.values() if not t.shape.depthwise} == {8}


def test_a_table_reads_kept_channels_and_its_calibration_recovers_each_terms_weight(planners):
    planner = planners("resnet20", 32)
    truth = synthetic(planner, scale=0.8, reorder_ms=0.5, off_factor=1.5)
    truth.penalty_scale, truth.off_layer_ms = 1.2, 0.05
    predict = planner.latency_predictor(truth)
    assert predict(np.zeros(len(planner.groups))) == pytest.approx(truth.baseline_ms)
    times = [predict(planner.pruned_channels([rate] * len(planner.groups), 8)) for rate in (0.0, 0.3, 0.6)]
    assert times[0] > times[1] > times[2]  # pruning more costs less on a cin·cout table
    # anchors measured on a "target" with those weights: the fit finds each again
    anchors = []
    for rates in anchor_rates(planner.groups):
        pruned = prune(analyze(copy.deepcopy(planner.structure.model), 32), rates)
        kept = {n: (s.in_channels, s.out_channels) for n, s in layer_shapes(pruned, planner.structure.example_input).items()}
        anchors.append((kept, truth.predict(kept) / truth.baseline_ms))
    fitted = copy.deepcopy(truth)
    fitted.scale, fitted.penalty_scale, fitted.reorder_ms, fitted.off_layer_ms = 1.0, None, 0.0, 0.0
    fitted.calibrate(anchors)
    assert fitted.coefficients == pytest.approx([0.8, 1.2, 0.5, 0.05], rel=1e-6)
    # a table written before the terms had weights of their own predicts as it did: one scale for both grids
    old = truth.to_dict()
    del old["penalty_scale"], old["off_layer_ms"]
    kept = anchors[3][0]
    old_table = LatencyTable.from_dict(old)
    assert old_table.predict(kept) == pytest.approx(truth.baseline_ms + float(
        np.array([0.8, 0.8, 0.5, 0.0]) @ (truth.features(kept) - truth.features({}))))


def test_a_latency_budget_is_met_on_the_prediction_for_every_allocator_shape(planners):
    planner = copy.copy(planners("resnet20", 32))
    planner.latency_ms = planner.latency_predictor(synthetic(planner))
    for pd in ("PD1", "PD3", "PD5"):
        plan = planner.plan(Policy(budget=40, budget_metric="latency", pd=pd))
        assert abs(plan.latency["reduction_pct"] - 40) <= 1.0, (pd, plan.latency)
        assert plan.to_dict()["latency_reduction_pct"] == plan.latency["reduction_pct"]
    with pytest.raises(PdsearchError, match="the most this model allows is"):
        planner.plan(Policy(budget=99, budget_metric="latency", pd="PD1"))
    with pytest.raises(PdsearchError, match="latency table built on the target"):
        planners("resnet20", 32).plan(Policy(budget=40, budget_metric="latency", pd="PD1"))


def test_a_table_saved_and_loaded_predicts_the_same_and_refuses_what_it_was_not_built_for(planners, tmp_path):
    planner = planners("resnet20", 32)
    table = synthetic(planner, scale=0.9, reorder_ms=0.2)
    loaded = LatencyTable.load(table.save(tmp_path / "t.json"))
    pruned = planner.pruned_channels([0.37] * len(planner.groups))
    assert planner.latency_predictor(loaded)(pruned) == pytest.approx(planner.latency_predictor(table)(pruned))
    with pytest.raises(PdsearchError, match="was built for input_size 32, this search's is 224"):
        loaded.check({"input_size": 224})
    with pytest.raises(PdsearchError, match="layer 'conv1' has 3->16 channels in the table, 1->16 here"):
        Planner("resnet20", input_size=32, in_channels=1).latency_predictor(loaded)


def test_built_on_this_machine_a_table_measures_every_layer_shape_and_its_anchors(tmp_path):
    table = LatencyTable.load(tiny_table(tmp_path / "t.json", runtime="onnxruntime", threads=1))
    assert table.key["runtime"] == "onnxruntime" and table.key["threads"] == 1 and table.key["input_size"] == 8
    assert len(table.anchors) == len(ANCHORS) + IRREGULAR_ANCHORS and all(0 < a["ratio"] < 2 for a in table.anchors)
    assert table.baseline_ms > 0 and table.scale > 0 and table.reorder_ms >= 0
    assert all(np.all(np.array(g["ms"]) > 0) for t in table.tables.values() for g in t.grids.values())


def test_squeeze_excitation_is_one_shape_and_each_conv_is_timed_with_the_activation_after_it(planners):
    planner = planners("mobilenet_v3_small", 64)
    shapes = layer_shapes(planner.structure.model, planner.structure.example_input)
    se = {n: s for n, s in shapes.items() if s.kind == "se"}
    assert len(se) == 9 and all(n.endswith(".fc1") and n[:-1] + "2" not in shapes for n in se)
    first = shapes["features.1.block.1.fc1"]  # after a 16-channel depthwise conv of stride 2
    assert (first.in_channels, first.out_channels, first.height, first.gate) == (16, 8, 16, "hardsigmoid")
    assert {s.activation for n, s in shapes.items() if s.kind == "conv"} == {"hardswish", "relu"}
    module = first.module(12, 8).eval()  # the unit alone keeps its input's shape: a product with it
    assert module(first.example(12, 2)).shape == (2, 12, 16, 16)
    # a block of two convs that keeps its input's shape is no squeeze-excitation; ReLU-like activations stay ReLU
    assert all(s.kind != "se" and s.activation == "relu" for s in layer_shapes(
        planners("resnet20", 32).structure.model, planners("resnet20", 32).structure.example_input).values())
    # pruned with the depthwise conv before it, the unit's channels follow that conv's
    table = synthetic(planner)
    pruned = planner.pruned_channels([0.5] * len(planner.groups), 8)
    kept = kept_channels(planner.cost_model, table, pruned)
    assert kept["features.4.block.2.fc1"][0] == kept["features.4.block.1.0"][1] < 96
    assert planner.latency_predictor(table)(pruned) < table.baseline_ms


def test_the_anchors_are_homogeneous_rates_then_irregular_ones_on_and_off_the_channel_step():
    from pdsearch.models import build_model
    groups = analyze(build_model("resnet20", num_classes=10), 32, 3).groups
    rates = anchor_rates(groups)
    assert len(rates) == len(ANCHORS) + IRREGULAR_ANCHORS
    homogeneous, irregular = rates[:len(ANCHORS)], rates[len(ANCHORS):]

    def alike(r: list[float]) -> bool:  # equal rates wherever groups are equally wide
        return all(len({x for x, g in zip(r, groups) if g.channels == width}) == 1 for width in {g.channels for g in groups})

    assert all(alike(r) for r in homogeneous) and not any(alike(r) for r in irregular)
    on_step = [[round(rate * g.channels) for rate, g in zip(r, groups)] for r in irregular[1::2]]
    assert all(n % 8 == 0 or n == 0 for counts in on_step for n in counts)
    assert anchor_rates(groups) == rates  # seeded: two builds calibrate on the same policies


def test_latency_table_and_plan_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "table.json"
    assert main(["latency-table", "--model", "resnet20", "--input-size", "32", "--runtime", "onnxruntime",
                 "--threads", "1", "--points", "3", "--out", str(out)]) == 0
    assert "layer shapes measured" in capsys.readouterr().out
    assert main(["plan", "--model", "resnet20", "--input-size", "32", "--latency-table", str(out),
                 "--latency-reduction", "25", "--pd", "3", "--round-to", "8", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["budget_metric"] == "latency" and abs(plan["latency_reduction_pct"] - 25) <= 2
    assert plan["latency_ms"] < plan["baseline_latency_ms"]


def test_the_plan_command_latency_table_prints_runs_and_says_which_target_its_latency_is_of(tmp_path, capsys):
    """A grey-input model's table, in INT8: the printed next command plans with it as it is."""
    out = tmp_path / "table.json"
    assert main(["latency-table", "--model", "small_cnn", "--input-size", "16", "--in-channels", "1", "--runtime",
                 "onnxruntime", "--precision", "int8", "--threads", "1", "--points", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "batch 1, int8 on onnxruntime" in printed
    command = printed.strip().splitlines()[-1].split("next: ", 1)[1]
    assert "--in-channels 1" in command and "--input-size 16" in command
    assert main([*shlex.split(command)[1:], "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["latency_input_size"], plan["latency_precision"], plan["latency_runtime"]) == (16, "int8", "onnxruntime")
    assert main(["plan", "--model", "small_cnn", "--in-channels", "1", "--input-size", "16", "--gpr", "30",
                 "--latency-table", str(out)]) == 0
    assert "predicted by the latency table: int8 at 16x16 on onnxruntime" in capsys.readouterr().out


def _outputs_agree(model: torch.nn.Module, batch: torch.Tensor) -> float:
    onnx_model = export_onnx(model.eval(), batch, dynamic_batch=True)
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    other = torch.cat([batch, batch.flip(0)])  # another batch size: the batch dimension is dynamic
    got = session.run(None, {"input": other.numpy()})[0]
    with torch.no_grad():
        want = model(other).numpy()
    assert np.allclose(got, want, atol=1e-4, rtol=1e-3)
    return float(np.abs(got - want).max())


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2"])
def test_onnx_runtime_computes_what_pytorch_computes_on_pruned_residual_and_depthwise_models(name, planners):
    planner = planners(name, 32)
    rates = planner.plan(Policy(budget=50, pd="PD3")).rates
    model = prune(analyze(copy.deepcopy(planner.structure.model), 32), rates).eval()
    with torch.no_grad():  # trained-looking statistics, so outputs are not all alike
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    _outputs_agree(model, torch.randn(3, 3, 32, 32))
    batch = torch.randn(1, 3, 32, 32)
    assert torch.allclose(torch.as_tensor(onnxruntime_session(model, batch)()[0]), torch_session(model, batch)(),
                          atol=1e-4, rtol=1e-3)


def test_a_model_onnx_cannot_export_is_named_by_its_operator():
    class Spectral(torch.nn.Module):
        def forward(self, x):
            return torch.fft.fft2(x).real

    with pytest.raises(PdsearchError, match=r"ONNX cannot export this model \(operator aten::fft_fft2\)"):
        export_onnx(Spectral(), torch.randn(1, 3, 8, 8))


def test_export_to_onnx_writes_what_pytorch_computes_with_the_opset_stated(nsga_run, tmp_path):
    import shutil

    from pdsearch.reporting.selection import select

    run_dir = shutil.copytree(nsga_run[1], tmp_path / "run", ignore=shutil.ignore_patterns("tune"))
    onnx_path, pt2_path = tmp_path / "pruned.onnx", tmp_path / "pruned.pt2"
    onnx_export = select(run_dir, export=onnx_path).record["export"]
    trial = json.loads(onnx_path.with_name("pruned.onnx.json").read_text())["trial_id"]
    select(run_dir, export=pt2_path, trial=trial)
    assert onnx_export["opset"] == 17 and onnx_export["check"]["max_abs_diff"] <= 1e-4
    assert json.loads((run_dir / "policy.json").read_text())["trial_id"] == trial
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(props["policy.json"])["export"]["opset"] == 17
    batch = torch.randn(5, *onnx_export["input"]["shape"])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    with torch.no_grad():  # the same trial rerun and saved with torch.export: the same model
        want = torch.export.load(str(pt2_path)).module()(batch).numpy()
    assert np.allclose(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.slow  # wall-clock timing: with the slow tests
def test_the_table_ranks_measured_latency_of_pruned_models_on_onnx_runtime():
    """A small version of benchmarks/latency_model.py: resnet18 at 224, six homogeneous rates on and off the
    multiple. (At 64x64 the model runs in about a millisecond, which this machine's noise swamps.)"""
    from scipy.stats import spearmanr

    planner = Planner("resnet18", num_classes=10, input_size=224)
    baseline = copy.deepcopy(planner.structure.model).eval()
    table = build_table(copy.deepcopy(baseline), "resnet18", 224, runtime="onnxruntime", threads=2, points=4)
    predict = planner.latency_predictor(table)
    batch, predicted, measured = torch.randn(1, 3, 224, 224), [], []
    for rate, round_to in ((0.1, 8), (0.3, 1), (0.45, 8), (0.6, 1), (0.75, 8), (0.85, 1)):
        rates = [g.channels_to_prune(rate, round_to) / g.channels for g in planner.groups]
        pruned = prune(analyze(copy.deepcopy(baseline), 224), rates).eval()
        mine, theirs = compare(pruned, baseline, batch, warmup=3, runs=20, rounds=7, runtime="onnxruntime", threads=2)
        measured.append(100 * (1 - mine.median_ms / theirs.median_ms))
        predicted.append(100 * (1 - predict(planner.pruned_channels(rates)) / table.baseline_ms))
    # the benchmark's 40 policies: Spearman 0.912, a median reduction gap of 6.2 points; six spread-out ones here
    assert spearmanr(predicted, measured).statistic >= 0.8, (predicted, measured)
    assert np.median(np.abs(np.array(predicted) - measured)) <= 12, (predicted, measured)


def test_round_to_is_a_sampler_dimension_and_recorded_per_trial():
    from pdsearch.space import SearchSpace, policy_fields

    from configs import tiny_config

    space = SearchSpace(tiny_config(space={"round_to": [1, 8, 16]}))
    assert list(space.fixed["round_to"].choices) == [1, 8, 16] and space.grid["round_to"] == [1, 8, 16]
    policy = space.policy({"gpr": 30.0, "pd": "PD1", "round_to": 8})
    assert policy.round_to == 8 and policy_fields(policy)["round_to"] == 8
    assert "round_to" not in SearchSpace(tiny_config(space={"round_to": 8})).fixed
    assert SearchSpace(tiny_config(space={"round_to": 8})).policy({"gpr": 30.0, "pd": "PD1"}).round_to == 8


def test_a_trial_predicts_latency_from_the_table_and_reads_it_when_the_source_is_the_table(baseline, tmp_path):
    from pdsearch.trial.trial import run_trial

    from configs import tiny_config

    table = LatencyTable.load(tiny_table(tmp_path / "t.json"))
    params, cpu = {"gpr": 50.0, "pd": "PD1"}, torch.device("cpu")
    measured = run_trial(params, tiny_config(search={"objectives": ["accuracy", "latency"]},
                                             latency={"table": "t.json", "warmup": 1, "runs": 3}),
                         baseline, cpu, latency_table=table.to_dict())
    predicted = run_trial(params, tiny_config(search={"objectives": ["accuracy", "latency"]},
                                              latency={"table": "t.json", "source": "table"}),
                          baseline, cpu, latency_table=table.to_dict())
    assert measured["latency_source"] == "measured" and measured["latency_ms"] > 0
    assert measured["latency_predicted_ms"] == predicted["latency_predicted_ms"] > 0  # the same plan, the same table
    assert predicted["latency_source"] == "table" and "latency_ms" not in predicted  # nothing timed on this node
    assert predicted["latency_ratio"] == pytest.approx(predicted["latency_predicted_ms"] / table.baseline_ms, rel=1e-3)
    assert predicted["latency_reduction_pct"] == predicted["latency_predicted_reduction_pct"]


@pytest.mark.parametrize("misses, aims", [((-10.0, -1.0), (30.0, 40.0)),  # corrected once: within tolerance
                                           # twice: measured 20 then 42 at aims 30 and 40, a slope of 2.2
                                           ((-10.0, 12.0, -4.0), (30.0, 40.0, 40 - 12 / 2.2))])
def test_a_measured_latency_budget_missed_is_planned_again_with_the_aim_moved_by_the_miss(
        baseline, tmp_path, monkeypatch, misses, aims):
    from pdsearch.trial import trial

    from configs import tiny_config

    measured, planned = iter(misses), []
    monkeypatch.setattr(trial, "measure_deployment", lambda *a: {
        "latency_source": "measured", "latency_reduction_pct": 30.0 + next(measured)})
    allocate = trial.allocate
    monkeypatch.setattr(trial, "allocate", lambda ctx, policy, *a: planned.append(policy.budget) or
                        allocate(ctx, policy, *a))
    cfg = tiny_config(space={"gpr": None, "budget": {"latency_reduction": {"low": 20, "high": 40}}},
                      search={"objectives": ["accuracy", "latency"]}, latency={"table": "t.json", "corrections": 2})
    table = synthetic(trial.trial_context(cfg, baseline).planner)  # a cost that falls with every channel
    table.baseline_ms = 1.05 * (table.baseline_ms - 1.0)  # ... and little of it fixed
    done = trial.run_trial({"budget": 30.0, "pd": "PD1"}, cfg, baseline, torch.device("cpu"),
                           latency_table=table.to_dict())
    assert done["status"] == "ok", done["failure_reason"]
    assert planned == pytest.approx(aims)
    nearest = min(range(len(misses)), key=lambda i: abs(misses[i]))
    assert done["latency_reduction_pct"] == 30.0 + misses[nearest]
    assert done["latency_aim_pct"] == pytest.approx(aims[nearest])
    assert done["budget"] == 30.0  # the policy is the sampled one; the aim is how the trial met it


def test_a_table_for_a_target_node_is_refused_where_no_node_carries_its_resource(ray_session, tmp_path):
    from pdsearch.cost.target import latency_table

    from configs import tiny_config

    config = tmp_path / "c.yaml"
    config.write_text(tiny_config(latency={"target_resource": "edge"}).to_yaml())
    with pytest.raises(PdsearchError, match="no node of the cluster at 'auto' carries the resource 'edge'"):
        latency_table(tmp_path / "t.json", config=config, address="auto")
    assert not (tmp_path / "t.json").exists()
