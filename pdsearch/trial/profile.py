"""The sensitivity profile of a run's baseline: measured once, cached beside the baseline.

The search measures it as a Ray task before the first trial when its space holds an
allocator that needs it (``pd: sensitivity``); every trial, ``resume``, the report and
``pdsearch sensitivity`` reuse the cached file.

Measured in channels_last, where BatchNorm's train-mode forward (its re-estimation, most of
the profile's time) is faster on the CPU (benchmarks/sensitivity_profile.py).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from pdsearch.config import SearchConfig, digest
from pdsearch.data.bundle import DataBundle
from pdsearch.files import atomic_path
from pdsearch.policy import ALLOCATORS, Needs, SensitivityProfile
from pdsearch.policy.allocators import Settings
from pdsearch.policy.allocators.sensitivity import SensitivitySettings
from pdsearch.pruning import lowest_channels
from pdsearch.trial.baseline import Baseline, model_and_data
from pdsearch.trial.channel_switch import ChannelSwitch, PrefixSplit, loss_and_accuracy, training_batches
from pdsearch.trial.training import default_device, recalibrate_batchnorm, reestimate_batchnorm, use_threads

PROFILE_LAYOUT = torch.channels_last  # the profile's memory layout (see above)


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


def compute_profile(cfg: SearchConfig, baseline: Baseline, device: torch.device | None = None,
                    report: Callable[[dict[str, Any]], None] | None = None) -> SensitivityProfile:
    """Measure the profile of ``baseline`` (run as a Ray task by the search, in-process by the verb).

    ``report`` receives the groups measured so far (``{stage, unit, done, total}``).
    """
    device = device or default_device()
    use_threads(cfg)
    model, data = model_and_data(cfg)
    model.load_state_dict(baseline.state_dict)
    on_group = (lambda done, total: report(  # noqa: E731
        {"stage": "sensitivity profile", "unit": "group", "done": done, "total": total})) if report else None
    return measure_sensitivity(model, data, cfg.space.criteria[0], _settings(cfg), device, seed=cfg.data.seed,
                               key=profile_key(cfg), on_group=on_group)


def measure_sensitivity(model: nn.Module, data: DataBundle, criterion: str, settings: SensitivitySettings,
                        device: torch.device, seed: int = 0, key: str = "",
                        on_group: Callable[[int, int], None] | None = None) -> SensitivityProfile:
    """Each channel group pruned alone at every rate of ``settings.rates``, BatchNorm re-estimated.

    ``on_group(done, total)`` before the first group and after each.
    """
    switch = ChannelSwitch(model, data.input_size, data.in_channels, device, PROFILE_LAYOUT)
    batches = [(x.contiguous(memory_format=PROFILE_LAYOUT), y)
               for x, y in training_batches(data, device, settings.eval_batches + settings.bn_batches, seed)]
    held_out, calibration = batches[: settings.eval_batches], batches[settings.eval_batches:]
    recalibrate_batchnorm(switch.model, calibration)  # the reference sees the same re-estimation
    reference = copy.deepcopy(switch.model.state_dict())
    base_loss, base_accuracy = loss_and_accuracy(switch.model, held_out)
    split = PrefixSplit(switch.model)
    names = {m: n for n, m in switch.model.named_modules()}
    accuracy, loss = [], []
    if on_group:
        on_group(0, len(switch.groups))
    for g, group in enumerate(switch.groups):
        score = switch.score(g, criterion, calibration)
        cut = split.at({names[module] for module, _, _ in switch.producers[g]})
        with torch.no_grad():  # the reference's values at the cut, in train mode and in eval mode
            switch.model.load_state_dict(reference)
            switch.model.train()
            calibration_live = [cut.prefix(x) for x, _ in calibration]
            switch.model.load_state_dict(reference)  # undo what train mode did to the statistics
            switch.model.eval()
            held_out_live = [(cut.prefix(x), y) for x, y in held_out]
        row_acc, row_loss = [], []
        for rate in settings.rates:
            n_prune = group.channels_to_prune(min(rate, 0.999))
            switch.model.load_state_dict(reference)
            if n_prune:
                switch.switch_off(g, lowest_channels(score, group, n_prune))
                switch.model.train()
                reestimate_batchnorm(cut.norms, cut.suffix, calibration_live)
                switch.model.eval()
            measured_loss, measured_acc = loss_and_accuracy(cut.suffix, held_out_live)
            row_loss.append(round(measured_loss, 6))
            row_acc.append(round(measured_acc, 4))
        accuracy.append(row_acc)
        loss.append(row_loss)
        if on_group:
            on_group(g + 1, len(switch.groups))
    return SensitivityProfile(
        groups=[g.name for g in switch.groups], rates=list(settings.rates), accuracy=accuracy, loss=loss,
        base_accuracy=round(base_accuracy, 4), base_loss=round(base_loss, 6), criterion=criterion, key=key,
    )
