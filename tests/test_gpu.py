"""CUDA: a trial, the screening and an export on a GPU (skipped where CUDA is absent; run with `pytest -m gpu`)."""
import pytest
import torch

from configs import tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


def test_a_trial_with_screening_runs_on_cuda():
    from pdsearch.trial import baseline as baseline_mod
    from pdsearch.trial.trial import run_trial

    cfg = tiny_config(finetune={"epochs": 2, "lr": 0.02})
    baseline = baseline_mod.build_baseline(cfg, CUDA)
    seen = []
    m = run_trial({"gpr": 40.0, "pd": "PD2"}, cfg, baseline, CUDA, report=seen.append)
    assert m["status"] == "ok" and m["device"] == "cuda" and [r["epoch"] for r in seen] == [0, 1, 2]
    assert m["accuracy_before_finetune"] != m["accuracy_pruned"]  # BatchNorm re-estimated on the GPU


def test_a_search_and_its_export_on_cuda(ray_session, tmp_path):
    from pdsearch.reporting.selection import select
    from pdsearch.searching.driver import run_search

    cfg = tiny_config(resources={"cpu": 1, "gpu": 0.5}, search={"num_trials": 4, "population_size": 4})
    result = run_search(cfg, tmp_path)
    assert set(result.trials["device"]) == {"cuda"}
    chosen = select(tmp_path, prefer="accuracy", export=tmp_path / "m.pt2")
    assert chosen.record["export"]["device"] == "cuda"
    assert chosen.record["export"]["val_accuracy"] == pytest.approx(chosen.trial["accuracy"], abs=1.0)
    loaded = torch.export.load(tmp_path / "m.pt2").module()
    assert loaded(torch.randn(3, 1, 8, 8)).shape == (3, 10)
