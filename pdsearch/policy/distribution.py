"""The continuous family of pruning distributions over depth.

A distribution is a shape over normalised depth x ∈ [0, 1] (u = 2x − 1):

    s(u) = 1 + slope·u + curvature·(3u² − 1)/2

PD1-PD5 are named (slope, curvature) points; any point in between is a valid shape, so
a search can explore shapes FlexiPrune never tabulated. Layer rates are c·s(x), clamped
to [0, max_rate]; the calibrated allocator solves the scale c so that the built model's
cost meets the goal. Clamped layers shed their excess onto the others automatically,
because the solve raises c until the goal is met.
"""
from __future__ import annotations

import numpy as np


def shape(positions: np.ndarray, slope: float, curvature: float) -> np.ndarray:
    u = 2.0 * np.asarray(positions, dtype=float) - 1.0
    return np.clip(1.0 + slope * u + curvature * (3.0 * u * u - 1.0) / 2.0, 0.0, None)
