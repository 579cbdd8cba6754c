"""Measured inference latency: what deployment pays, which FLOPs do not always predict.

Warm-up runs, then the median of N timed runs (and the interquartile range), in eval and
inference mode, CUDA synchronised around each run. Measure the pruned model and its
baseline back to back in one process and use the ratio: absolute times differ between
nodes, GPUs and moments on a shared machine, ratios taken side by side far less.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Latency:
    median_ms: float
    iqr_ms: float


@torch.inference_mode()
def measure_latency(model: nn.Module, batch: torch.Tensor, warmup: int = 10, runs: int = 50) -> Latency:
    """Median and IQR of ``runs`` forward passes of ``batch`` (on the model's device) after ``warmup``."""
    was_training = model.training
    model.eval()
    cuda = batch.device.type == "cuda"
    times = []
    try:
        for i in range(warmup + runs):
            if cuda:
                torch.cuda.synchronize(batch.device)
            start = time.perf_counter()
            model(batch)
            if cuda:
                torch.cuda.synchronize(batch.device)
            if i >= warmup:
                times.append(1000.0 * (time.perf_counter() - start))
    finally:
        model.train(was_training)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return Latency(float(median), float(q3 - q1))


def reduction_pct(pruned: float, baseline: float) -> float:
    """How much less the pruned model takes than its baseline, in percent (negative: it takes more)."""
    return 100.0 * (1.0 - pruned / baseline)


def compare(pruned: nn.Module, baseline: nn.Module, batch: torch.Tensor, warmup: int = 10, runs: int = 50,
            rounds: int = 3) -> tuple[Latency, Latency]:
    """Both models measured in alternating rounds in this process, so drift on the machine hits both alike."""
    pruned_runs, base_runs = [], []
    for _ in range(rounds):
        pruned_runs.append(measure_latency(pruned, batch, warmup, runs))
        base_runs.append(measure_latency(baseline, batch, warmup, runs))
    pick = lambda found: sorted(found, key=lambda l: l.median_ms)[len(found) // 2]  # noqa: E731  (median round)
    return pick(pruned_runs), pick(base_runs)
