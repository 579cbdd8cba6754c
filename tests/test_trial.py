"""Trials and the searcher: metrics, failures recorded as failed, never NaN to Optuna."""
import dataclasses
import math

import pytest
import torch

from pdsearch.errors import PdsearchError
from pdsearch.trial.trial import run_trial

from configs import tiny_config

CPU = torch.device("cpu")


def test_trial_metrics(baseline):
    cfg = tiny_config()
    m = run_trial({"gpr": 40.0, "pd": "PD2"}, cfg, baseline, CPU)
    assert m["status"] == "ok" and m["failure_reason"] == ""
    assert 0 < m["flops_reduction_pct"] < 100 and m["flops"] > 0 and m["params"] > 0
    assert m["acc_drop"] == pytest.approx(baseline.val_accuracy - m["accuracy"])
    assert len(m["rates"]) == 5 and m["pd"] == "PD2" and m["gpr"] == 40.0
    assert all(math.isfinite(m[k]) for k in ("accuracy", "test_accuracy", "accuracy_before_finetune"))
    assert m["device"] == "cpu" and m["node_id"]


def test_repeats_report_mean_and_std(baseline):
    cfg = tiny_config(space={"repeats": 3, "criteria": ["random"]})
    m = run_trial({"gpr": 50.0, "pd": "PD1", "criterion": "random"}, cfg, baseline, CPU)
    assert m["accuracy_std"] >= 0 and "test_accuracy_std" in m
    single = [run_trial({"gpr": 50.0, "pd": "PD1", "criterion": "random", "seed": s}, tiny_config(space={"criteria": ["random"]}), baseline, CPU)["accuracy"] for s in range(3)]
    assert m["accuracy"] == pytest.approx(sum(single) / 3)


def test_diverged_trial_is_failed_not_nan(baseline):
    poisoned = dataclasses.replace(baseline, state_dict=dict(baseline.state_dict))
    poisoned.state_dict["classifier.3.weight"] = torch.full_like(baseline.state_dict["classifier.3.weight"], float("nan"))
    m = run_trial({"gpr": 30.0, "pd": "PD1"}, tiny_config(), poisoned, CPU)
    assert m["status"] == "failed" and m["failure_reason"].startswith("diverged")
    assert all(math.isfinite(v) for v in (m["accuracy"], m["flops"], m["params"]))


def test_out_of_memory_is_failed(baseline, monkeypatch):
    def boom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("pdsearch.trial.trial.train", boom)
    m = run_trial({"gpr": 30.0, "pd": "PD1"}, tiny_config(), baseline, CPU)
    assert m["status"] == "failed" and m["failure_reason"] == "out of memory"


def test_other_errors_propagate(baseline, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr("pdsearch.trial.trial.train", bug)
    with pytest.raises(ValueError):
        run_trial({"gpr": 30.0, "pd": "PD1"}, tiny_config(), baseline, CPU)


def test_a_policy_error_in_a_trial_is_a_failed_trial_not_a_retry(monkeypatch, baseline):
    from pdsearch.trial.trial import run_trial

    def impossible(*args, **kwargs):
        raise PdsearchError("budget FLOPs reduction 99% is unreachable")

    monkeypatch.setattr("pdsearch.trial.trial.allocate", impossible)
    cfg = tiny_config()
    m = run_trial({"gpr": 30.0, "pd": "PD1"}, cfg, baseline, __import__("torch").device("cpu"))
    assert m["status"] == "failed" and "unreachable" in m["failure_reason"]
