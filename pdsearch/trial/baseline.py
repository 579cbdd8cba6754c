"""The unpruned model every trial starts from: loaded from a checkpoint or trained once.

A trained baseline is cached in the run directory under a key of everything it depends
on (model, data, training settings), so trials and reruns reuse it. Nothing is loaded
by unpickling arbitrary objects, which runs whatever code a file carries: the cache is
safetensors (weights) plus JSON (metadata), and user checkpoints load with torch's
``weights_only=True`` unless the config says the file is trusted.
"""
from __future__ import annotations

import json
import pickle
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pdsearch.config import SearchConfig
from pdsearch.data import load_data
from pdsearch.data.bundle import DataBundle
from pdsearch.errors import PdsearchError
from pdsearch.files import atomic_path
from pdsearch.models import accepts_in_channels, build_model
from pdsearch.registry import load_plugins
from pdsearch.trial.training import default_device, evaluate, prepare, train


def model_and_data(cfg: SearchConfig) -> tuple[nn.Module, DataBundle]:
    """A fresh (untrained) model and the data, with channels matched between them."""
    load_plugins(cfg.plugins)  # in a Ray task or trial: the names the driver's plugins registered
    data = load_data(cfg.data)
    channels = data.in_channels if accepts_in_channels(cfg.model.name) else 3
    data = data.with_channels(channels)
    model = build_model(cfg.model.name, num_classes=data.num_classes, in_channels=channels, **cfg.model.kwargs)
    return model, data


TRUST_KEY = "baseline.trust_checkpoint"


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


def read_checkpoint(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors file, or a torch file loaded without running its code.

    A state_dict, or a dict wrapping one under ``state_dict``, ``model_state_dict`` or
    ``model``, loads with ``weights_only=True``. A pickled ``nn.Module`` needs full
    unpickling, which executes code the file carries: only with ``trust``.
    """
    path = Path(path)
    if not path.is_file():
        raise PdsearchError(f"baseline checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return _state_dict_of(torch.load(path, map_location="cpu", weights_only=not trust))
    except PdsearchError:
        raise
    except pickle.UnpicklingError as exc:
        what = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "global" in line), "")
        raise PdsearchError(
            f"checkpoint {path} needs full unpickling, which runs code stored in the file"
            + (f" ({what.rstrip('.')})" if what else "")
            + f": save a state_dict (torch.save(model.state_dict(), path)) or, only for a file you trust, set {TRUST_KEY}: true"
        ) from None
    except Exception as exc:
        raise PdsearchError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None


def _classifier(model: nn.Module) -> str | None:
    """The name of the model's final classifier: timm's ``get_classifier``, else the last Linear."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(head, nn.Module) and id(head) in names:
        return names[id(head)]
    return next((n for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)


def load_checkpoint(model: nn.Module, path: str, trust: bool = False) -> list[str]:
    """Load ``path`` into ``model``; return the classifier keys it skipped.

    A checkpoint trained for another number of classes (a pretrained download) loads
    everything but its classifier, which stays freshly initialised; any other mismatch
    is refused.
    """
    state = read_checkpoint(path, trust)
    own = model.state_dict()
    head = _classifier(model)
    skipped = [k for k, v in state.items() if head and k.startswith(head + ".") and k in own and own[k].shape != v.shape]
    try:
        result = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    except RuntimeError as exc:  # size mismatches
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0])
        raise PdsearchError(f"checkpoint {path} does not fit model {type(model).__name__}: {detail}") from None
    missing = [k for k in result.missing_keys if k not in skipped]
    for what, keys in (("missing", missing), ("unexpected", result.unexpected_keys)):
        if keys:
            raise PdsearchError(f"checkpoint {path} does not fit model {type(model).__name__}: {len(keys)} {what} "
                                f"key(s): {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}")
    return [f"{k} {list(state[k].shape)}" for k in skipped]


@dataclass
class Baseline:
    """The unpruned model every trial starts from: its weights (CPU tensors) and what it measured.

    Travels from the driver to the trials through Ray's object store; ``record()`` is what
    baseline.json keeps of it (no weights).
    """

    key: str  # SearchConfig.baseline_key(): what the weights depend on
    state_dict: dict[str, torch.Tensor]
    val_accuracy: float
    test_accuracy: float
    seconds: float = 0.0  # to load or train
    source: str = "trained"  # or the checkpoint's path
    skipped_keys: list[str] = field(default_factory=list)  # a checkpoint's classifier of another class count

    def record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "state_dict"}

    @classmethod
    def from_record(cls, record: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> "Baseline":
        known = {f.name for f in fields(cls)} - {"state_dict"}
        return cls(state_dict=state_dict, **{k: v for k, v in record.items() if k in known})


def build_baseline(cfg: SearchConfig, device: torch.device | None = None,
                   report: Callable[[dict[str, Any]], None] | None = None) -> Baseline:
    """Load or train the baseline; return its weights and accuracies (CPU tensors).

    ``report`` receives the training's progress: before the first epoch and after each
    (with the validation accuracy then), as the search prints it.
    """
    device = device or default_device()
    torch.manual_seed(cfg.data.seed)  # the same config gives the same baseline
    model, data = model_and_data(cfg)
    start = time.time()
    skipped = load_checkpoint(model, cfg.baseline.checkpoint, cfg.baseline.trust_checkpoint) \
        if cfg.baseline.checkpoint else []
    model = prepare(model, device)
    if not cfg.baseline.checkpoint or skipped:  # trained here, or its new classifier fine-tuned with the rest
        epochs = cfg.baseline.epochs
        progress = (lambda done, accuracy=None: report(  # noqa: E731
            {"stage": "baseline", "unit": "epoch", "done": done, "total": epochs, "val_accuracy": accuracy})) \
            if report else None
        if progress:
            progress(0)
        train(model, data, cfg.baseline, device, seed=cfg.data.seed,
              after_epoch=(lambda e: progress(e, evaluate(model, data, "val", device))) if progress else None)
    return Baseline(key=cfg.baseline_key(), state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
                    val_accuracy=evaluate(model, data, "val", device), test_accuracy=evaluate(model, data, "test", device),
                    seconds=round(time.time() - start, 2), source=cfg.baseline.checkpoint or "trained",
                    skipped_keys=skipped)


def _cache(run_dir: Path, key: str) -> tuple[Path, Path]:
    folder = Path(run_dir) / "baseline"
    return folder / f"{key}.safetensors", folder / f"{key}.json"


def cached_baseline(cfg: SearchConfig, run_dir: Path) -> Baseline | None:
    """The cached baseline for ``cfg``, read without unpickling; None if there is none."""
    key = cfg.baseline_key()
    weights, meta = _cache(run_dir, key)
    if weights.is_file() and meta.is_file():
        return Baseline.from_record(json.loads(meta.read_text()), load_file(str(weights)))
    legacy = Path(run_dir) / "baseline" / f"{key}.pt"  # written by pdsearch before 0.2
    if not legacy.is_file():
        return None
    try:
        old = torch.load(legacy, map_location="cpu", weights_only=True)
    except Exception:
        print(f"pdsearch: note: the cached baseline {legacy} cannot be read without running code: "
              "it is retrained", file=sys.stderr)
        return None
    baseline = Baseline.from_record(old, old["state_dict"])
    save_baseline(baseline, run_dir)
    return baseline


def save_baseline(baseline: Baseline, run_dir: Path) -> None:
    weights, meta = _cache(run_dir, baseline.key)
    weights.parent.mkdir(parents=True, exist_ok=True)
    info = baseline.record()
    with atomic_path(weights) as tmp:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in baseline.state_dict.items()}, str(tmp))
    for path in (meta, weights.parent / "baseline.json"):
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(info, indent=2))
