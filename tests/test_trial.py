"""Trials and the searcher: metrics, failures recorded as failed, never NaN to Optuna."""
import math

import optuna
import pytest
import torch

from conftest import tiny_config
from pdsearch import baseline as baseline_mod
from pdsearch.errors import PdsearchError
from pdsearch.searcher import PolicySearcher
from pdsearch.space import SearchSpace
from pdsearch.trial import run_trial

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def baseline():
    return baseline_mod.build_baseline(tiny_config(), CPU)


def test_trial_metrics(baseline):
    cfg = tiny_config()
    m = run_trial({"gpr": 40.0, "pd": "PD2"}, cfg, baseline, CPU)
    assert m["status"] == "ok" and m["failure_reason"] == ""
    assert 0 < m["flops_reduction_pct"] < 100 and m["flops"] > 0 and m["params"] > 0
    assert m["acc_drop"] == pytest.approx(baseline["val_accuracy"] - m["accuracy"])
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
    poisoned = {**baseline, "state_dict": dict(baseline["state_dict"])}
    poisoned["state_dict"]["classifier.3.weight"] = torch.full_like(baseline["state_dict"]["classifier.3.weight"], float("nan"))
    m = run_trial({"gpr": 30.0, "pd": "PD1"}, tiny_config(), poisoned, CPU)
    assert m["status"] == "failed" and m["failure_reason"].startswith("diverged")
    assert all(math.isfinite(v) for v in (m["accuracy"], m["flops"], m["params"]))


def test_out_of_memory_is_failed(baseline, monkeypatch):
    def boom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("pdsearch.trial.train", boom)
    m = run_trial({"gpr": 30.0, "pd": "PD1"}, tiny_config(), baseline, CPU)
    assert m["status"] == "failed" and m["failure_reason"] == "out of memory"


def test_other_errors_propagate(baseline, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr("pdsearch.trial.train", bug)
    with pytest.raises(ValueError):
        run_trial({"gpr": 30.0, "pd": "PD1"}, tiny_config(), baseline, CPU)


TINY_MODEL = {"name": "small_cnn", "input_size": 8, "in_channels": 1, "num_classes": 10, "flops": 1e5, "params": 1e4}


def make_searcher(cfg, run_dir):
    return PolicySearcher(space=SearchSpace(cfg), metric=["accuracy", "flops", "params"], mode=["max", "min", "min"],
                          sampler=optuna.samplers.RandomSampler(seed=0), cfg=cfg, model_info=TINY_MODEL,
                          run_dir=run_dir)


def result(status="ok", acc=95.0, drop=1.0, red=50.0):
    return {"status": status, "accuracy": acc, "flops": 100.0, "params": 10.0, "acc_drop": drop,
            "flops_reduction_pct": red, "params_reduction_pct": red, "failure_reason": "" if status == "ok" else "diverged: nan"}


def test_searcher_tells_failures_as_fail_and_sets_constraints(tmp_path):
    cfg = tiny_config(search={"constraints": {"max_acc_drop": 2.0, "min_flops_reduction": 40}})
    searcher = make_searcher(cfg, tmp_path)
    for tid in ("a", "b", "c", "d"):
        searcher.suggest(tid)
    searcher.on_trial_complete("a", result())
    searcher.on_trial_complete("b", result(status="failed", acc=0.0))
    searcher.on_trial_complete("c", {**result(), "accuracy": float("nan")})
    searcher.on_trial_complete("d", result(drop=5.0))
    trials = {t.user_attrs["tune_trial_id"]: t for t in searcher._ot_study.trials if "tune_trial_id" in t.user_attrs}
    states = {k: t.state for k, t in trials.items()}
    assert states == {"a": optuna.trial.TrialState.COMPLETE, "b": optuna.trial.TrialState.FAIL,
                      "c": optuna.trial.TrialState.FAIL, "d": optuna.trial.TrialState.COMPLETE}
    assert trials["b"].user_attrs["failure_reason"] == "diverged: nan"
    assert trials["a"].constraints == {"acc_drop": -1.0, "flops_reduction": -10.0}
    assert [t.user_attrs["tune_trial_id"] for t in searcher._ot_study.best_trials] == ["a"]  # d is infeasible


def test_searcher_does_not_rerun_a_policy(tmp_path):
    cfg = tiny_config(space={"gpr": {"values": [20]}, "pd": [1, 2]})
    searcher = make_searcher(cfg, tmp_path)
    first = searcher.suggest("t1")
    searcher.on_trial_complete("t1", result())
    second = searcher.suggest("t2")
    assert second != first  # only two policies exist: a repeat of the first is redrawn
    searcher.on_trial_complete("t2", result(acc=90.0))
    searcher.suggest("t3")  # space exhausted: repeats are told their known results, then accepted
    repeats = [t for t in searcher._ot_study.trials if "repeat_of" in t.user_attrs]
    assert repeats and all(t.values in ([95.0, 100.0, 10.0], [90.0, 100.0, 10.0]) for t in repeats)


def test_baseline_cache_and_checkpoints(tmp_path, baseline):
    cfg = tiny_config()
    assert baseline_mod.cached_baseline(cfg, tmp_path) is None
    baseline_mod.save_baseline(baseline, tmp_path)
    cached = baseline_mod.cached_baseline(cfg, tmp_path)
    assert cached["val_accuracy"] == baseline["val_accuracy"] and (tmp_path / "baseline" / "baseline.json").is_file()
    assert baseline_mod.cached_baseline(tiny_config(baseline={"epochs": 7}), tmp_path) is None  # other key
    # a checkpoint is loaded as the baseline, and reproduces its accuracy
    ckpt = tmp_path / "model.pt"
    torch.save({"state_dict": baseline["state_dict"]}, ckpt)
    loaded = baseline_mod.build_baseline(tiny_config(baseline={"checkpoint": str(ckpt)}), CPU)
    assert loaded["val_accuracy"] == pytest.approx(baseline["val_accuracy"])
    # a checkpoint of another architecture is a clear error
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(PdsearchError, match="does not fit model SmallCNN"):
        baseline_mod.build_baseline(tiny_config(baseline={"checkpoint": str(other)}), CPU)
    with pytest.raises(PdsearchError, match="checkpoint not found"):
        baseline_mod.build_baseline(tiny_config(baseline={"checkpoint": str(tmp_path / "none.pt")}), CPU)


def test_same_config_same_baseline(baseline):
    again = baseline_mod.build_baseline(tiny_config(), CPU)
    assert again["val_accuracy"] == baseline["val_accuracy"]
    assert all(torch.equal(again["state_dict"][k], v) for k, v in baseline["state_dict"].items())
