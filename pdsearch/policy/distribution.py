"""Calibrated pruning distributions for any CNN.

A distribution is a shape over normalised depth x ∈ [0, 1] (u = 2x − 1):

    s(u) = 1 + slope·u + curvature·(3u² − 1)/2

PD1-PD5 are named (slope, curvature) points; any point in between is a valid shape, so
a search can explore shapes FlexiPrune never tabulated. Layer rates are c·GPR·s(x),
clamped to [0, max_rate]; the scale c is solved by bisection so that the chosen cost
(FLOPs, params, or the plain mean rate) matches homogeneous pruning at the same GPR.
Clamped layers shed their excess onto the others automatically, because the solve
raises c until the target is met. The cost is the exact one, integer channel counts
included, so PDs match homogeneous pruning as built, not only in a continuous relaxation.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pdsearch.errors import PdsearchError

CostFn = Callable[[np.ndarray], tuple[float, float]]  # rates -> (flops, params)


def shape(positions: np.ndarray, slope: float, curvature: float) -> np.ndarray:
    u = 2.0 * np.asarray(positions, dtype=float) - 1.0
    return np.clip(1.0 + slope * u + curvature * (3.0 * u * u - 1.0) / 2.0, 0.0, None)


def calibrated_rates(
    positions: np.ndarray,
    gpr: float,
    slope: float,
    curvature: float,
    cost: CostFn,
    target: str = "flops",
    max_rate: float = 0.9,
    steps: np.ndarray | None = None,
) -> np.ndarray:
    """Per-group rates of a shape whose ``target`` cost equals homogeneous pruning at ``gpr`` (a fraction).

    ``steps[g]`` is the rate change that moves group g by one channel; with it, a solve
    that lands between two channel counts is refined group by group (see _refine).
    """
    n = len(positions)
    if gpr == 0:
        return np.zeros(n)
    if gpr > max_rate:
        raise PdsearchError(f"GPR {gpr * 100:g} exceeds the per-layer maximum rate {max_rate * 100:g}%")
    weights = shape(positions, slope, curvature)
    if not weights.any():
        raise PdsearchError(f"shape (slope {slope}, curvature {curvature}) prunes no layer")

    def reduction(rates: np.ndarray) -> float:  # grows with c for every target
        if target == "mean":
            return float(rates.mean())
        flops, params = cost(rates)
        return -(flops if target == "flops" else params)

    goal = reduction(np.full(n, gpr))
    if slope == 0 and curvature == 0:
        return np.full(n, gpr)

    def rates_at(c: float) -> np.ndarray:
        return np.clip(c * gpr * weights, 0.0, max_rate)

    lo, hi = 0.0, max_rate / (gpr * weights[weights > 0].min())
    if reduction(rates_at(hi)) < goal - 1e-9 * abs(goal):
        raise PdsearchError(
            f"shape (slope {slope}, curvature {curvature}) cannot match the {target} of homogeneous "
            f"pruning at GPR {gpr * 100:g} with layer rates capped at {max_rate * 100:g}%"
        )
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if reduction(rates_at(mid)) < goal:
            lo = mid
        else:
            hi = mid
    # Channel counts are integers, so the cost is a step function of c: take the closer side.
    below, above = rates_at(lo), rates_at(hi)
    rates = below if goal - reduction(below) < reduction(above) - goal else above
    if steps is not None and target != "mean":
        rates = _refine(rates, goal, reduction, np.asarray(steps, dtype=float), max_rate)
    return rates


def _refine(rates, goal, reduction, steps, max_rate, tolerance=2e-3, rounds=8) -> np.ndarray:
    """Move single groups by one channel while that brings the cost closer to the goal.

    Small networks (16-channel ResNet stages) have cost steps of a point or more; a few
    one-channel moves close the gap while leaving the shape intact to within a channel.
    """
    error = reduction(rates) - goal
    for _ in range(rounds):
        if abs(error) <= tolerance * abs(goal):
            break
        best, best_error = None, error
        for g in range(len(rates)):
            for sign in (1.0, -1.0):
                candidate = rates.copy()
                candidate[g] = np.clip(candidate[g] + sign * steps[g], 0.0, max_rate)
                e = reduction(candidate) - goal
                if abs(e) < abs(best_error):
                    best, best_error = candidate, e
        if best is None:
            break
        rates, error = best, best_error
    return rates
