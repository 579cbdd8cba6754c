"""Sensitivity allocation (ACRA; ModelOpt FastNAS; NNI's SensitivityAnalysis).

The profile holds, per channel group, the loss on a held-out slice of the training data
after pruning that group alone at rates 0.1 … 0.9 (BatchNorm re-estimated each time);
pdsearch.trial.profile measures it once per baseline. Allocation: every group takes the
largest rate whose loss increase stays within one threshold τ, read off its curve
(made monotone, interpolated between measured rates); τ is solved by bisection so the
built model meets the budget. ``blend`` mixes in the uniform rate (0 = pure
sensitivity, 1 = homogeneous), so the sampler can explore around the pure allocation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator

from pdsearch.errors import PdsearchError
from pdsearch.policy.allocators.base import Allocator, Needs, Problem, Settings, register
from pdsearch.policy.solve import bisect, refine
from pdsearch.ranges import Range

if TYPE_CHECKING:
    from pdsearch.policy.policy import Policy


@dataclass
class SensitivityProfile:
    """Each group pruned alone: accuracy (%) and loss on a held-out slice of the training data."""

    groups: list[str]
    rates: list[float]
    accuracy: list[list[float]]  # [group][rate]
    loss: list[list[float]]
    base_accuracy: float
    base_loss: float
    criterion: str
    key: str = ""

    def increase(self) -> np.ndarray:
        """Loss increase per group and rate, made monotone in the rate (more pruning never helps)."""
        rise = np.maximum(np.asarray(self.loss, dtype=float) - self.base_loss, 0.0)
        return np.maximum.accumulate(rise, axis=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SensitivityProfile":
        return cls(**data)


class SensitivitySettings(Settings):
    blend: Range = Range(low=0.0, high=0.5)
    """Weight of the uniform rate mixed into the sensitivity-derived one (searched)."""
    rates: list[float] = [round(0.1 * i, 1) for i in range(1, 10)]
    """Pruning rates each group is measured at, alone, for the profile."""
    bn_batches: int = Field(5, ge=0)
    """Training batches that re-estimate BatchNorm statistics per measurement."""
    eval_batches: int = Field(4, ge=1)
    """Held-out training batches the loss and accuracy are measured on."""

    @field_validator("blend")
    @classmethod
    def _blend(cls, value: Range) -> Range:
        if value.low < 0 or value.high > 1:
            raise ValueError(f"blend lies in [0, 1] (0: pure sensitivity, 1: homogeneous), got [{value.low:g}, {value.high:g}]")
        return value

    @field_validator("rates")
    @classmethod
    def _rates(cls, value: list[float]) -> list[float]:
        if not value or value != sorted(set(value)) or not 0 < value[0] <= value[-1] < 1:
            raise ValueError("rates must be increasing fractions in (0, 1)")
        return value


@register
class Sensitivity(Allocator):
    name = "sensitivity"
    needs = Needs.SENSITIVITY
    settings = SensitivitySettings

    def rates(self, policy: Policy, problem: Problem) -> np.ndarray:
        profile: SensitivityProfile | None = problem.profile
        if profile is None:
            raise PdsearchError("pd sensitivity needs the baseline's sensitivity profile (trained weights and data): "
                                "use it in a search, or run pdsearch sensitivity RUN_DIR")
        names = [str(n) for n in profile.groups]
        if len(names) != len(problem.positions):
            raise PdsearchError(f"the sensitivity profile has {len(names)} groups, the model {len(problem.positions)}")
        curves = self._curves(profile, policy.max_rate)
        blend = float(policy.options.get("blend", 0.0))
        ceiling = max(c[0][-1] for c in curves)

        def rates_at(t: float) -> np.ndarray:
            tau = t * ceiling
            sens = np.array([np.interp(tau, increase, rates) for increase, rates in curves])
            return np.minimum((1 - blend) * sens + blend * t * policy.max_rate, policy.max_rate)

        goal = problem.goal(policy)
        _, rates = bisect(rates_at, goal, problem.space)
        return refine(rates, goal, problem.space)

    @staticmethod
    def _curves(profile: SensitivityProfile, max_rate: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per group, loss increase -> largest rate within it: strictly increasing points for np.interp."""
        increase = profile.increase()
        top = max(max_rate, profile.rates[-1])
        curves = []
        for row in increase:
            tiny = 1e-9 * np.arange(1, len(row) + 2)  # ties: the largest rate with that increase wins
            xs = np.concatenate([[0.0], row, [row[-1] * 1.5 + 1e-6]]) + np.concatenate([[0.0], tiny])
            ys = np.minimum(np.concatenate([[0.0], profile.rates, [top]]), max_rate)
            curves.append((xs, ys))
        return curves
