"""Weights load without running code: safe checkpoints and a safe baseline cache."""
import pathlib

import pytest
import torch
from safetensors.torch import save_file

from pdsearch.errors import PdsearchError
from pdsearch.models import build_model
from pdsearch.trial import baseline as baseline_mod

from configs import tiny_config

CPU = torch.device("cpu")


def small_cnn():
    return build_model("small_cnn", num_classes=10, in_channels=1, width=8)


class WritesMarker:
    """Unpickling this runs code: it writes a file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "code ran"))


def test_a_checkpoint_that_runs_code_is_refused_unless_trusted(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": small_cnn().state_dict(), "payload": WritesMarker(marker)}, path)
    with pytest.raises(PdsearchError, match="needs full unpickling, which runs code .* baseline.trust_checkpoint: true"):
        baseline_mod.load_checkpoint(small_cnn(), str(path))
    assert not marker.exists()
    baseline_mod.load_checkpoint(small_cnn(), str(path), trust=True)  # opted in: it loads, and its code ran
    assert marker.read_text() == "code ran"


def test_a_pickled_module_is_refused_and_loads_when_trusted(tmp_path):
    model = small_cnn()
    path = tmp_path / "module.pt"
    torch.save(model, path)
    with pytest.raises(PdsearchError, match="needs full unpickling"):
        baseline_mod.load_checkpoint(small_cnn(), str(path))
    target = small_cnn()
    baseline_mod.load_checkpoint(target, str(path), trust=True)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("form", ["state_dict", "state_dict_key", "model_state_dict_key", "model_key", "safetensors"])
def test_safe_checkpoint_forms_load(tmp_path, form):
    model = small_cnn()
    state = model.state_dict()
    path = tmp_path / ("model.safetensors" if form == "safetensors" else "model.pt")
    if form == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif form == "state_dict":
        torch.save(state, path)
    else:
        torch.save({form.removesuffix("_key"): state, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    target = small_cnn()
    baseline_mod.load_checkpoint(target, str(path))
    assert all(torch.equal(target.state_dict()[k], v) for k, v in state.items())


def test_the_cache_is_safetensors_and_json_and_the_old_format_still_reads(tmp_path):
    cfg = tiny_config()
    baseline = baseline_mod.build_baseline(cfg, CPU)
    baseline_mod.save_baseline(baseline, tmp_path)
    key = cfg.baseline_key()
    assert {p.name for p in (tmp_path / "baseline").iterdir()} == {f"{key}.safetensors", f"{key}.json", "baseline.json"}
    cached = baseline_mod.cached_baseline(cfg, tmp_path)
    assert cached.val_accuracy == baseline.val_accuracy
    assert all(torch.equal(cached.state_dict[k], v) for k, v in baseline.state_dict.items())
    # a cache of the earlier format (torch.save of the whole dict) is read once, safely, and converted
    old = tmp_path / "old"
    (old / "baseline").mkdir(parents=True)
    torch.save({**baseline.record(), "state_dict": baseline.state_dict}, old / "baseline" / f"{key}.pt")
    again = baseline_mod.cached_baseline(cfg, old)
    assert again.val_accuracy == baseline.val_accuracy and (old / "baseline" / f"{key}.safetensors").is_file()
    # one that needs unpickling is not run: a one-line notice, and the baseline is rebuilt
    evil = tmp_path / "evil"
    (evil / "baseline").mkdir(parents=True)
    torch.save({**baseline.record(), "state_dict": baseline.state_dict, "payload": WritesMarker(tmp_path / "marker")}, evil / "baseline" / f"{key}.pt")
    assert baseline_mod.cached_baseline(cfg, evil) is None and not (tmp_path / "marker").exists()


def test_trusting_a_checkpoint_keeps_the_baseline_key():
    assert tiny_config(baseline={"trust_checkpoint": True}).baseline_key() == tiny_config().baseline_key()


def test_baseline_cache_and_checkpoints(tmp_path, baseline):
    cfg = tiny_config()
    assert baseline_mod.cached_baseline(cfg, tmp_path) is None
    baseline_mod.save_baseline(baseline, tmp_path)
    cached = baseline_mod.cached_baseline(cfg, tmp_path)
    assert cached.val_accuracy == baseline.val_accuracy and (tmp_path / "baseline" / "baseline.json").is_file()
    assert baseline_mod.cached_baseline(tiny_config(baseline={"epochs": 7}), tmp_path) is None  # other key
    # a checkpoint is loaded as the baseline, and reproduces its accuracy
    ckpt = tmp_path / "model.pt"
    torch.save({"state_dict": baseline.state_dict}, ckpt)
    loaded = baseline_mod.build_baseline(tiny_config(baseline={"checkpoint": str(ckpt)}), CPU)
    assert loaded.val_accuracy == pytest.approx(baseline.val_accuracy)
    # a checkpoint of another architecture is a clear error
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(PdsearchError, match="does not fit model SmallCNN"):
        baseline_mod.build_baseline(tiny_config(baseline={"checkpoint": str(other)}), CPU)
    with pytest.raises(PdsearchError, match="checkpoint not found"):
        baseline_mod.build_baseline(tiny_config(baseline={"checkpoint": str(tmp_path / "none.pt")}), CPU)


def test_same_config_same_baseline(baseline):
    again = baseline_mod.build_baseline(tiny_config(), CPU)
    assert again.val_accuracy == baseline.val_accuracy
    assert all(torch.equal(again.state_dict[k], v) for k, v in baseline.state_dict.items())
