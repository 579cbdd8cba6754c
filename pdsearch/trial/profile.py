"""The sensitivity profile of a run's baseline: measured once, cached beside the baseline.

The search measures it as a Ray task before the first trial when its space holds an
allocator that needs it (``pd: sensitivity``); every trial, ``resume``, the report and
``pdsearch sensitivity`` reuse the cached file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from pdsearch.config import SearchConfig, digest
from pdsearch.files import atomic_path
from pdsearch.policy import ALLOCATORS, Needs, SensitivityProfile
from pdsearch.policy.allocators import Settings
from pdsearch.trial.baseline import model_and_data
from pdsearch.trial.probing import measure_sensitivity
from pdsearch.trial.training import default_device, use_threads


def _profiled_by(cfg: SearchConfig) -> str | None:
    """The allocator of the space that reads the profile (its settings say how it is measured)."""
    return next((name for name in cfg.space.allocators_used() if ALLOCATORS[name].needs == Needs.SENSITIVITY), None)


def _settings(cfg: SearchConfig) -> Settings:
    return cfg.space.settings_for(_profiled_by(cfg) or "sensitivity")


def profile_key(cfg: SearchConfig) -> str:
    """The baseline's key plus what the measurement depends on (criterion, rates, batches)."""
    measured = {k: v for k, v in _settings(cfg).model_dump().items() if k not in _settings(cfg).searched()}
    return digest({"baseline": cfg.baseline_key(), "criterion": cfg.space.criteria[0], **measured})


def needs_profile(cfg: SearchConfig) -> bool:
    return _profiled_by(cfg) is not None


def _path(cfg: SearchConfig, run_dir: Path) -> Path:
    return Path(run_dir) / "baseline" / f"sensitivity-{profile_key(cfg)}.json"


def cached_profile(cfg: SearchConfig, run_dir: Path) -> SensitivityProfile | None:
    path = _path(cfg, run_dir)
    return SensitivityProfile.from_dict(json.loads(path.read_text())) if path.is_file() else None


def save_profile(cfg: SearchConfig, profile: SensitivityProfile, run_dir: Path) -> Path:
    path = _path(cfg, run_dir)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(profile.to_dict()))
    return path


def compute_profile(cfg: SearchConfig, baseline: dict[str, Any], device: torch.device | None = None,
                    report: Callable[[dict[str, Any]], None] | None = None) -> SensitivityProfile:
    """Measure the profile of ``baseline`` (run as a Ray task by the search, in-process by the verb).

    ``report`` receives the groups measured so far (``{stage, unit, done, total}``).
    """
    device = device or default_device()
    use_threads(cfg)
    model, data = model_and_data(cfg)
    model.load_state_dict(baseline["state_dict"])
    on_group = (lambda done, total: report(  # noqa: E731
        {"stage": "sensitivity profile", "unit": "group", "done": done, "total": total})) if report else None
    return measure_sensitivity(model, data, cfg.space.criteria[0], _settings(cfg), device, seed=cfg.data.seed,
                               key=profile_key(cfg), on_group=on_group)
