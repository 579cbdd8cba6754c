"""The Policy value: what one search trial prunes with.

How much: a global pruning rate (``gpr``, percent) or a budget (``budget`` percent of
FLOPs or params removed). How it is spread: ``pd``, a named shape (PD1-PD5), a custom
shape (``pd`` None, ``slope``/``curvature``), or a data-driven allocator such as
``sensitivity``; ``mode`` picks who allocates named shapes (calibrated shapes or
FlexiPrune's tables). Which filters: ``criterion``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pdsearch.catalog.precisions import PRECISIONS
from pdsearch.errors import PdsearchError
from pdsearch.policy.allocators import Allocator, allocator_for, distribution_allocators, modes
from pdsearch.policy.criteria import check_criterion
from pdsearch.policy.solve import LABELS
from pdsearch.registry import unknown

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
MIXED_CRITERIA = "mixed"  # the criterion column of a policy whose allocator chose one per group
TARGETS = ("flops", "params", "mean")
BUDGET_METRICS = tuple(LABELS)


def normalize_pd(pd: Any) -> str:
    """Accept 2, '2', 'pd2', 'PD2', 'bottom-up' or an allocator ('sensitivity'); return 'PD2' or the name."""
    key = str(pd).strip()
    if key.lower() in distribution_allocators():
        return key.lower()
    if key.lower().replace("_", "-") in PD_ALIASES:
        return PD_ALIASES[key.lower().replace("_", "-")]
    if key.isdigit():
        key = f"PD{key}"
    key = key.upper()
    if key not in PD_SHAPES:
        names = list(PD_SHAPES) + list(PD_ALIASES) + distribution_allocators()
        raise PdsearchError(unknown("pruning distribution", pd, names))
    return key


def _percent(name: str, value: Any, high_open: bool = False) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value < 100 or (high_open and value == 0):
        raise PdsearchError(f"{name} must be a number in {'(0' if high_open else '[0'}, 100), got {value!r}")


@dataclass(frozen=True)
class Policy:
    """How much to prune (``gpr`` or ``budget``), how to spread it (``pd``), which filters (``criterion``).

    ``options`` holds the allocator's own searchable parameters (sensitivity's ``blend``).
    """

    gpr: float | None = None
    pd: str | None = "PD1"
    slope: float = field(default=0.0)
    curvature: float = field(default=0.0)
    criterion: str = "l1"
    mode: str = "calibrated"
    target: str = "flops"
    max_rate: float = 0.9
    seed: int = 0
    budget: float | None = None
    budget_metric: str = "flops"
    options: dict[str, float] = field(default_factory=dict)
    round_to: int = 1  # every pruned group keeps a multiple of this many channels (hardware vector width)
    precision: str = "fp32"  # what the pruned model ships in (catalog.precisions): int8 is quantized after fine-tuning

    def __post_init__(self) -> None:
        if (self.gpr is None) == (self.budget is None):
            raise PdsearchError("a policy takes either a GPR or a budget (FLOPs, params or latency reduction), not "
                                + ("both" if self.gpr is not None else "neither"))
        if self.gpr is not None:
            _percent("GPR", self.gpr)
        else:
            _percent("budget", self.budget, high_open=True)
            if self.budget_metric not in BUDGET_METRICS:
                raise PdsearchError(unknown("budget metric", self.budget_metric, BUDGET_METRICS))
        if self.pd is not None:
            pd = normalize_pd(self.pd)
            object.__setattr__(self, "pd", pd)
            if pd in PD_SHAPES:
                object.__setattr__(self, "slope", PD_SHAPES[pd][0])
                object.__setattr__(self, "curvature", PD_SHAPES[pd][1])
        if self.mode not in modes():
            raise PdsearchError(unknown("mode", self.mode, modes()))
        if self.target not in TARGETS:
            raise PdsearchError(unknown("calibration target", self.target, TARGETS))
        if not 0 < self.max_rate < 1:
            raise PdsearchError(f"max_rate must be in (0, 1), got {self.max_rate!r}")
        if not isinstance(self.round_to, int) or isinstance(self.round_to, bool) or self.round_to < 1:
            raise PdsearchError(f"round_to must be a positive integer, got {self.round_to!r}")
        if self.precision not in PRECISIONS:
            raise PdsearchError(unknown("precision", self.precision, PRECISIONS))
        check_criterion(self.criterion)
        self.allocator.validate(self)

    @property
    def allocator(self) -> Allocator:
        """The registered allocator that turns this policy into per-group rates."""
        return allocator_for(self.pd, self.mode)

    @property
    def label(self) -> str:
        return self.pd or f"shape({self.slope:+.2f},{self.curvature:+.2f})"

    @property
    def criterion_label(self) -> str:
        """The criterion, or 'mixed' where the allocator picks one per group (loss_aware)."""
        return MIXED_CRITERIA if self.allocator.chooses_criteria else self.criterion

    @property
    def name(self) -> str:
        """Short and file-name safe, for trial names: 'gpr40-PD2-l1', 'flops60-loss_aware-mixed', 'gpr40-PD2-l1-int8'."""
        amount = f"gpr{round(self.gpr, 1):g}" if self.budget is None else f"{self.budget_metric}{round(self.budget, 1):g}"
        shape = self.pd or f"shape{self.slope:+.2f}{self.curvature:+.2f}"
        return "-".join([amount, shape, self.criterion_label] + ([f"seed{self.seed}"] if self.seed else [])
                        + ([self.precision] if self.precision != "fp32" else []))

    @property
    def amount(self) -> str:
        """'GPR 40%' or 'FLOPs -50%'."""
        if self.budget is None:
            return f"GPR {self.gpr:g}%"
        return f"{LABELS[self.budget_metric]} -{self.budget:g}%"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Policy":
        known = {f.name for f in fields(cls)}
        extra = set(data) - known
        if extra:
            raise PdsearchError(f"unknown policy field(s): {', '.join(sorted(extra))}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        return cls.from_dict(json.loads(text))
