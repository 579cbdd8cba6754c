"""Precision as part of the policy: INT8 by ONNX Runtime's static quantization, measured as it ships."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

import pdsearch.cost.quantize
from pdsearch.cli import main
from pdsearch.config import QuantizationConfig
from pdsearch.cost.latency_table import LatencyTable
from pdsearch.cost.quantize import quantize_int8
from pdsearch.models import build_model
from pdsearch.reporting.document import report
from pdsearch.space import SearchSpace
from pdsearch.trial.baseline import model_and_data
from pdsearch.trial.quantized import deployed_model, onnx_accuracy
from pdsearch.trial.trial import run_trial

from configs import tiny_config, tiny_table

CPU = torch.device("cpu")
INT8_SPACE = {"precision": ["fp32", "int8"]}


def test_calibration_reads_training_batches_only(monkeypatch):
    cfg = tiny_config()
    model, data = model_and_data(cfg)
    read, calibrated = [], []
    batches = type(data).batches

    def spy_batches(self, split, *args, **kwargs):
        read.append(split)
        return batches(self, split, *args, **kwargs)

    def spy_quantize(model, example, calibration, recipe):
        calibrated.extend(calibration)
        return quantize_int8(model, example, calibration, recipe)

    monkeypatch.setattr(type(data), "batches", spy_batches)
    monkeypatch.setattr(pdsearch.cost.quantize, "quantize_int8", spy_quantize)
    deployed_model(model, torch.zeros(1, 1, 8, 8), data, "int8", QuantizationConfig(calibration_batches=3))
    assert read == ["train"] and len(calibrated) == 3
    train_x = data.train.x
    assert all(any(torch.equal(b[0], x) for x in train_x[:3 * len(b)]) for b in calibrated)  # unaugmented train images


def test_the_quantized_model_computes_what_the_float_model_computes_within_int8_error():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).eval()
    x = torch.randn(16, 3, 32, 32)
    quantized = quantize_int8(model, x[:1], [x[:8]])
    got = next(pdsearch.cost.quantize.onnx_logits(quantized, [x[8:]]))
    with torch.no_grad():
        want = model(x[8:]).numpy()
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load_from_string(quantized).graph.node}
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.98 and not np.allclose(got, want, atol=1e-6)


def test_an_int8_trial_reports_the_deployed_models_accuracy_beside_the_fp32_ones(baseline):
    cfg = tiny_config(space=INT8_SPACE)
    fp32 = run_trial({"gpr": 40.0, "pd": "PD2", "precision": "fp32"}, cfg, baseline, CPU)
    int8 = run_trial({"gpr": 40.0, "pd": "PD2", "precision": "int8"}, cfg, baseline, CPU)
    assert int8["precision"] == "int8" and fp32["precision"] == "fp32"
    assert int8["accuracy_fp32"] == fp32["accuracy"] and int8["test_accuracy_fp32"] == fp32["test_accuracy"]
    assert int8["quantization_drop"] == pytest.approx(int8["accuracy_fp32"] - int8["accuracy"])
    assert int8["acc_drop"] == pytest.approx(baseline.val_accuracy - int8["accuracy"])
    assert int8["quantization_seconds"] > 0 and int8["flops"] == fp32["flops"]


def test_fp32_trials_are_exactly_what_they_were_before_precisions(baseline):
    """An FP32 policy in a space that also searches INT8 measures what a plain FP32 search does, nothing added."""
    plain = run_trial({"gpr": 30.0, "pd": "PD3"}, tiny_config(), baseline, CPU)
    mixed = run_trial({"gpr": 30.0, "pd": "PD3", "precision": "fp32"}, tiny_config(space=INT8_SPACE), baseline, CPU)
    timing = {"seconds", "allocation_seconds"}
    assert {k: v for k, v in plain.items() if k not in timing} == {k: v for k, v in mixed.items() if k not in timing}
    assert "accuracy_fp32" not in plain and "quantization_drop" not in plain


def test_precision_is_a_sampler_dimension_only_when_several_are_searched():
    assert "precision" in SearchSpace(tiny_config(space=INT8_SPACE)).fixed
    single = SearchSpace(tiny_config(space={"precision": ["int8"]}))
    assert "precision" not in single.fixed and single.policy(single.first()).precision == "int8"
    assert single.policy(single.first()).name.endswith("-int8")


def test_an_int8_trial_times_the_int8_model_against_both_baselines(baseline):
    cfg = tiny_config(space={"precision": ["int8"]}, latency={"runtime": "onnxruntime", "runs": 5, "warmup": 1},
                      search={"objectives": ["accuracy", "latency"]})
    m = run_trial({"gpr": 40.0, "pd": "PD1"}, cfg, baseline, CPU)
    assert m["latency_runtime"] == "onnxruntime" and m["precision"] == "int8"
    assert m["latency_ratio"] == pytest.approx(m["latency_ms"] / m["baseline_latency_ms"])  # INT8 against INT8
    assert m["latency_reference"] == "int8"
    # the FP32 baseline and the pruned model in FP32 are timed in the same rounds: one round's ratios
    assert m["latency_ratio_vs_fp32"] == pytest.approx(m["latency_ms"] / m["baseline_latency_ms_vs_fp32"])
    assert m["quantization_speedup"] == pytest.approx(m["latency_fp32_ms"] / m["latency_ms"])
    assert m["latency_reduction_pct_vs_fp32"] == pytest.approx(100 * (1 - m["latency_ratio_vs_fp32"]))


def test_in_a_search_over_several_precisions_every_latency_ratio_is_against_the_fp32_baseline(baseline):
    cfg = tiny_config(space=INT8_SPACE, latency={"runtime": "onnxruntime", "runs": 5, "warmup": 1},
                      search={"objectives": ["accuracy", "latency"]})
    int8 = run_trial({"gpr": 40.0, "pd": "PD1", "precision": "int8"}, cfg, baseline, CPU)
    fp32 = run_trial({"gpr": 40.0, "pd": "PD1", "precision": "fp32"}, cfg, baseline, CPU)
    assert int8["latency_reference"] == fp32["latency_reference"] == "fp32"
    assert int8["latency_ratio"] == int8["latency_ratio_vs_fp32"]
    assert fp32["latency_ratio"] == pytest.approx(fp32["latency_ms"] / fp32["baseline_latency_ms"])


def test_an_int8_latency_table_is_keyed_by_its_precision_and_refuses_an_fp32_search(tmp_path):
    path = tiny_table(tmp_path / "int8.json", runtime="onnxruntime", precision="int8")
    table = LatencyTable.load(path)
    assert table.key["precision"] == "int8" and table.block == 8  # INT8 kernels' channel multiple here
    old = json.loads(path.read_text())
    old["key"].pop("precision")  # a table written before precisions: FP32
    assert LatencyTable.from_dict(old).key["precision"] == "fp32"


def test_a_search_over_fp32_and_int8_records_both_and_exports_the_int8_pick_as_it_measured(ray_session, tmp_path,
                                                                                          capsys):
    cfg = tiny_config(space=INT8_SPACE, search={"num_trials": 8, "population_size": 4}).model_dump(mode="json")
    config = tmp_path / "search.yaml"
    config.write_text(json.dumps(cfg))
    run = tmp_path / "run"
    assert main(["search", str(config), "--run-dir", str(run), "--quiet"]) == 0
    trials = pd.read_csv(run / "trials.csv")
    int8 = trials[trials["precision"] == "int8"]
    assert set(trials["precision"]) == {"fp32", "int8"} and len(int8)
    assert np.allclose(int8["quantization_drop"], int8["accuracy_fp32"] - int8["accuracy"])
    assert trials.loc[trials["precision"] == "fp32", "quantization_drop"].isna().all()

    rep = report(run)
    assert {"precision_fronts.png", "quantization_drop.png"} <= set(rep.plots)
    assert "## Precision: the front as it ships" in rep.markdown.read_text()

    out = tmp_path / "m.onnx"
    assert main(["select", str(run), "--precision", "int8", "--export", str(out)]) == 0
    record = json.loads((run / "policy.json").read_text())
    assert record["policy"]["precision"] == "int8"
    export = record["export"]
    assert export["quantization"]["calibration_data"]["split"] == "train" and export["quantization"]["recipe"] == "minmax"
    _, data = model_and_data(tiny_config())
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # the file itself, fresh
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(out)).graph.node)
    correct = total = 0
    for x, y in data.batches("test", CPU):
        correct += int((session.run(None, {"input": x.numpy()})[0].argmax(1) == y.numpy()).sum())
        total += len(y)
    assert abs(100.0 * correct / total - export["test_accuracy"]) <= 0.5
    assert onnx_accuracy(out.read_bytes(), data, "val") == pytest.approx(export["val_accuracy"], abs=0.5)
    assert ", int8 (trial" in capsys.readouterr().out
