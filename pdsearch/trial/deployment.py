"""What a trial measures beyond accuracy and fvcore counts, for the objectives that ask (objectives.py).

The pruned model and the baseline are measured back to back in the trial's process, so
the ratio compares like with like on whatever node ran the trial.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from pdsearch.config import SearchConfig
from pdsearch.cost.energy import energy_per_image
from pdsearch.cost.latency import compare, device_name, reduction_pct
from pdsearch.registry import resolve
from pdsearch.trial.training import prepare


def latency_shape(shape: Sequence[int], cfg: SearchConfig) -> tuple[int, ...]:
    """One input's shape at the deployment resolution (``latency.input_size``, else the data's)."""
    size = cfg.latency.input_size
    return tuple(shape) if size is None else (shape[0], size, size)


def predicted_latency(predicted: dict[str, float] | None, cfg: SearchConfig, table_key: dict[str, Any] | None
                      ) -> dict[str, Any]:
    """A plan's latency predicted by the search's latency table; what the objective reads when its source is the table."""
    if predicted is None:
        return {}
    fields: dict[str, Any] = {"latency_predicted_ms": predicted["pruned"],
                              "baseline_latency_predicted_ms": predicted["base"],
                              "latency_predicted_reduction_pct": predicted["reduction_pct"]}
    if cfg.latency.source == "table":
        fields.update(latency_ratio=predicted["pruned"] / predicted["base"],
                      latency_reduction_pct=predicted["reduction_pct"], latency_source="table",
                      latency_runtime=table_key["runtime"], latency_device=table_key["device"])
    return fields


def latency(pruned: nn.Module, baseline: nn.Module, shape, cfg: SearchConfig, device: torch.device,
            precision: str = "fp32") -> dict[str, Any]:
    """The pruned model against the baseline, both in the policy's precision; a quantized policy's two models
    are timed in FP32 too, in the same rounds (``*_vs_fp32``: what pruning and quantization buy together;
    ``quantization_speedup``: the same pruned model, FP32 over INT8).

    The objective's ratio (``latency_ratio``) is against the baseline in the policy's own precision
    when the space ships one, and against the FP32 baseline when it searches several, so that
    policies of every precision share one reference (``latency_reference``)."""
    s, fields = cfg.latency, {}
    if s.source == "table":  # predicted from the plan (predicted_latency): the trial's node is not the target
        return fields
    shape = latency_shape(shape, cfg)
    reference = None if precision == "fp32" else "fp32"
    common = "fp32" if len(cfg.space.precision) > 1 else precision
    for i, size in enumerate(s.batch_sizes):
        mine, theirs, *fp32 = compare(pruned, baseline, torch.randn(size, *shape, device=device), s.warmup, s.runs,
                                      s.rounds, runtime=s.runtime, threads=s.threads, precision=precision,
                                      reference=reference)
        suffix = "" if i == 0 else f"_bs{size}"
        fields.update({f"latency_ms{suffix}": mine.median_ms, f"latency_iqr_ms{suffix}": mine.iqr_ms,
                       f"baseline_latency_ms{suffix}": theirs.median_ms})
        if fp32:
            base32, pruned32 = fp32
            fields.update({f"baseline_latency_ms{suffix}_vs_fp32": base32.median_ms,
                           f"latency_fp32_ms{suffix}": pruned32.median_ms,
                           f"latency_ratio{suffix}_vs_fp32": mine.median_ms / base32.median_ms,
                           f"latency_reduction_pct{suffix}_vs_fp32": reduction_pct(mine.median_ms, base32.median_ms),
                           f"quantization_speedup{suffix}": pruned32.median_ms / mine.median_ms})
        against = fp32[0] if fp32 and common == "fp32" else theirs
        fields.update({f"latency_ratio{suffix}": mine.median_ms / against.median_ms,
                       f"latency_reduction_pct{suffix}": reduction_pct(mine.median_ms, against.median_ms)})
    fields.update(latency_device=device_name(device, s.threads), latency_runtime=s.runtime, latency_source="measured",
                  latency_reference=common)
    return fields


def energy(pruned: nn.Module, baseline: nn.Module, shape, cfg: SearchConfig, device: torch.device,
           precision: str = "fp32") -> dict[str, Any]:
    """NVML's energy of the torch model on the trial's GPU (the FP32 model, whatever the policy's precision)."""
    batch = torch.randn(cfg.latency.batch_sizes[0], *shape, device=device)
    mine, theirs = energy_per_image(pruned, batch, cfg.latency.runs), energy_per_image(baseline, batch, cfg.latency.runs)
    return dict(energy_mj_per_image=mine, baseline_energy_mj_per_image=theirs, energy_ratio=mine / theirs,
                energy_reduction_pct=reduction_pct(mine, theirs))


def measure_deployment(pruned: nn.Module, baseline: nn.Module, shape: Sequence[int], cfg: SearchConfig,
                       device: torch.device, precision: str = "fp32") -> dict[str, Any]:
    """What the search's objectives and constraints measure (each objective's ``measures``, run once)."""
    fields: dict[str, Any] = {}
    wanted = cfg.search.measures()
    if wanted:
        pruned = prepare(pruned, device).eval()
        for path in sorted(wanted):
            fields.update(resolve(path)(pruned, baseline, shape, cfg, device, precision))
    return fields
