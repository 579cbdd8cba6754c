"""The Policy value: what one search trial prunes with."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pdsearch.errors import PdsearchError

# Named pruning distributions: (slope, curvature) points of the continuous shape family.
# PD2 rises with depth (bottom-up), PD3 falls (top-down), PD4 peaks mid-network
# (low-high-low), PD5 dips there (high-low-high).
PD_SHAPES: dict[str, tuple[float, float]] = {
    "PD1": (0.0, 0.0),
    "PD2": (0.6, 0.0),
    "PD3": (-0.6, 0.0),
    "PD4": (0.0, -0.6),
    "PD5": (0.0, 0.6),
}
PD_ALIASES = {
    "homogeneous": "PD1",
    "bottom-up": "PD2",
    "top-down": "PD3",
    "low-high-low": "PD4",
    "high-low-high": "PD5",
}
MODES = ("calibrated", "flexiprune")
TARGETS = ("flops", "params", "mean")
CRITERIA = ("l1", "l2", "fpgm", "random", "taylor", "bn_scale")


def check_criterion(name: str) -> str:
    if name not in CRITERIA:
        raise PdsearchError(f"unknown criterion {name!r}: use one of {', '.join(CRITERIA)}")
    return name


def normalize_pd(pd: Any) -> str:
    """Accept 2, '2', 'pd2', 'PD2' or 'bottom-up'; return 'PD2'."""
    key = str(pd).strip()
    if key.lower().replace("_", "-") in PD_ALIASES:
        return PD_ALIASES[key.lower().replace("_", "-")]
    if key.isdigit():
        key = f"PD{key}"
    key = key.upper()
    if key not in PD_SHAPES:
        names = ", ".join(list(PD_SHAPES) + list(PD_ALIASES))
        raise PdsearchError(f"unknown pruning distribution {pd!r}: use one of {names}")
    return key


@dataclass(frozen=True)
class Policy:
    """Global pruning rate (percent) + pruning distribution + filter criterion.

    ``pd`` names a distribution (PD1-PD5); a custom shape leaves ``pd`` None and sets
    ``slope``/``curvature`` instead (calibrated mode only).
    """

    gpr: float
    pd: str | None = "PD1"
    slope: float = field(default=0.0)
    curvature: float = field(default=0.0)
    criterion: str = "l1"
    mode: str = "calibrated"
    target: str = "flops"
    max_rate: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.gpr, (int, float)) or not math.isfinite(self.gpr) or not 0 <= self.gpr < 100:
            raise PdsearchError(f"GPR must be a number in [0, 100), got {self.gpr!r}")
        if self.pd is not None:
            pd = normalize_pd(self.pd)
            object.__setattr__(self, "pd", pd)
            object.__setattr__(self, "slope", PD_SHAPES[pd][0])
            object.__setattr__(self, "curvature", PD_SHAPES[pd][1])
        if self.mode not in MODES:
            raise PdsearchError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.mode == "flexiprune" and self.pd is None:
            raise PdsearchError("flexiprune mode needs a named PD (PD1-PD5), not a custom shape")
        if self.target not in TARGETS:
            raise PdsearchError(f"unknown calibration target {self.target!r}: use one of {', '.join(TARGETS)}")
        if not 0 < self.max_rate < 1:
            raise PdsearchError(f"max_rate must be in (0, 1), got {self.max_rate!r}")
        check_criterion(self.criterion)

    @property
    def label(self) -> str:
        return self.pd or f"shape({self.slope:+.2f},{self.curvature:+.2f})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Policy":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise PdsearchError(f"unknown policy field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        return cls.from_dict(json.loads(text))
