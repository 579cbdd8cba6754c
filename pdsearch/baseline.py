"""The unpruned model every trial starts from: loaded from a checkpoint or trained once.

A trained baseline is cached in the run directory under a key of everything it depends
on (model, data, training settings), so trials and reruns reuse it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pdsearch.config import SearchConfig
from pdsearch.data import DataBundle, load_data
from pdsearch.errors import PdsearchError
from pdsearch.models import accepts_in_channels, build_model
from pdsearch.training import evaluate, prepare, train


def model_and_data(cfg: SearchConfig) -> tuple[nn.Module, DataBundle]:
    """A fresh (untrained) model and the data, with channels matched between them."""
    data = load_data(cfg.data)
    channels = data.in_channels if accepts_in_channels(cfg.model.name) else 3
    data = data.with_channels(channels)
    model = build_model(cfg.model.name, num_classes=data.num_classes, in_channels=channels, **cfg.model.kwargs)
    return model, data


def _state_dict_of(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], (dict, nn.Module)):
                return _state_dict_of(obj[key])
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise PdsearchError("checkpoint holds neither a state_dict nor a model")


def load_checkpoint(model: nn.Module, path: str) -> None:
    if not Path(path).is_file():
        raise PdsearchError(f"baseline checkpoint not found: {path}")
    try:
        state = _state_dict_of(torch.load(path, map_location="cpu", weights_only=False))
        model.load_state_dict(state)
    except PdsearchError:
        raise
    except RuntimeError as exc:  # missing / unexpected keys, size mismatches
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0])
        raise PdsearchError(f"checkpoint {path} does not fit model {type(model).__name__}: {detail}") from None
    except Exception as exc:
        raise PdsearchError(f"cannot read checkpoint {path}: {exc}") from None


def build_baseline(cfg: SearchConfig, device: torch.device | None = None) -> dict[str, Any]:
    """Load or train the baseline; return its weights and accuracies (CPU tensors)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.data.seed)  # the same config gives the same baseline
    model, data = model_and_data(cfg)
    start = time.time()
    if cfg.baseline.checkpoint:
        load_checkpoint(model, cfg.baseline.checkpoint)
        model = prepare(model, device)
    else:
        model = prepare(model, device)
        train(model, data, cfg.baseline, device, seed=cfg.data.seed)
    return {
        "key": cfg.baseline_key(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "val_accuracy": evaluate(model, data, "val", device),
        "test_accuracy": evaluate(model, data, "test", device),
        "seconds": round(time.time() - start, 2),
        "source": cfg.baseline.checkpoint or "trained",
    }


def cached_baseline(cfg: SearchConfig, run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "baseline" / f"{cfg.baseline_key()}.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def save_baseline(baseline: dict[str, Any], run_dir: Path) -> None:
    folder = run_dir / "baseline"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(baseline, folder / f"{baseline['key']}.pt")
    info = {k: v for k, v in baseline.items() if k != "state_dict"}
    (folder / "baseline.json").write_text(json.dumps(info, indent=2))
