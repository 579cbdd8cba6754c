"""The budget solve every allocator shares: one scalar found by bisection, then one-channel moves.

An allocator describes its rates as a function of one scalar t ∈ [0, 1] that prunes more
as t grows (a shape's scale, a sensitivity threshold, FlexiPrune's GPR). ``solve`` finds
the t whose *built* model meets the goal (ACRA's binary search), then moves single
groups by one channel while that brings the cost closer: channel counts are integers, so
a small network's cost is a step function with steps of a point or more.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pdsearch.errors import PdsearchError

CostFn = Callable[[np.ndarray], tuple[float, float]]  # rates -> (flops, params), channel rounding included
LatencyFn = Callable[[np.ndarray], float]  # rates -> milliseconds on the target (a latency table's prediction)
LABELS = {"flops": "FLOPs", "params": "params", "latency": "latency"}  # what a budget can reduce
METRICS = (*LABELS, "mean")
NO_TABLE = ("a latency budget is predicted from a latency table built on the target: set latency.table "
            "(pdsearch plan: --latency-table), built with pdsearch latency-table")


@dataclass(frozen=True)
class Goal:
    """Reach ``reduction`` (a fraction) of ``metric``: FLOPs, params, or the plain mean rate."""

    metric: str
    reduction: float

    def describe(self) -> str:
        what = "mean rate" if self.metric == "mean" else f"{LABELS[self.metric]} reduction"
        return f"{what} {100 * self.reduction:.2f}%"


@dataclass(frozen=True)
class CostSpace:
    """What a budget solve needs to know of a model: its cost as a function of per-group rates."""

    cost: CostFn
    base: tuple[float, float]  # unpruned (flops, params)
    steps: np.ndarray  # rate change that moves each group by one channel
    max_rate: float
    latency: LatencyFn | None = None  # where a latency table is given
    base_latency: float = 0.0  # its prediction for the unpruned model

    @property
    def groups(self) -> int:
        return len(self.steps)

    def reduction(self, rates: np.ndarray, metric: str) -> float:
        """Fraction of ``metric`` removed by ``rates`` (grows with every rate)."""
        if metric == "mean":
            return float(np.mean(rates))
        if metric == "latency":
            if self.latency is None:
                raise PdsearchError(NO_TABLE)
            return 1.0 - self.latency(rates) / self.base_latency
        flops, params = self.cost(rates)
        base = self.base[0] if metric == "flops" else self.base[1]
        return 1.0 - (flops if metric == "flops" else params) / base if base else 0.0

    def homogeneous(self, rate: float, metric: str) -> float:
        return self.reduction(np.full(self.groups, rate), metric)

    def reachable(self, metric: str) -> float:
        """The most a policy can remove of ``metric`` with every rate at the cap (for latency, at any homogeneous
        rate: channel counts off a runtime's multiple can cost more than they save)."""
        if metric == "latency":
            return max(self.homogeneous(rate, metric) for rate in np.linspace(0, self.max_rate, 19))
        return self.homogeneous(self.max_rate, metric)

    def check(self, goal: Goal) -> None:
        best = self.reachable(goal.metric)
        if goal.reduction > best + 1e-9:
            raise PdsearchError(
                f"budget {goal.describe()} is unreachable with layer rates capped at {100 * self.max_rate:g}%: "
                f"the most this model allows is {100 * best:.2f}%"
            )

    def uniform_rate(self, goal: Goal) -> float:
        """ACRA's uniform strategy: the single rate (fraction) for all groups that meets ``goal``."""
        self.check(goal)
        return bisect(lambda t: np.full(self.groups, t * self.max_rate), goal, self)[0] * self.max_rate


def bisect(rates_at: Callable[[float], np.ndarray], goal: Goal, space: CostSpace, iterations: int = 50
           ) -> tuple[float, np.ndarray]:
    """The t in [0, 1] whose rates come closest to ``goal`` (rates_at must prune more as t grows)."""
    def reduction(t: float) -> float:
        return space.reduction(rates_at(t), goal.metric)

    if reduction(1.0) < goal.reduction - 1e-9:
        raise PdsearchError(f"{goal.describe()} is out of reach: at most {100 * reduction(1.0):.2f}%")
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if reduction(mid) < goal.reduction:
            lo = mid
        else:
            hi = mid
    # The cost is a step function of t: take the side that lands closer.
    t = lo if goal.reduction - reduction(lo) < reduction(hi) - goal.reduction else hi
    return t, rates_at(t)


def refine(rates: np.ndarray, goal: Goal, space: CostSpace, tolerance: float = 5e-4, rounds: int = 24,
           reach: int = 3) -> np.ndarray:
    """Move single groups by one channel while that brings the cost closer to ``goal``.

    Each group moves at most ``reach`` channels, so the allocation keeps its shape; stops
    within ``tolerance`` (a fraction of the base cost) or when no single move helps.
    """
    if goal.metric == "mean":
        return rates
    rates = np.asarray(rates, dtype=float)
    moved = np.zeros(space.groups, dtype=int)
    error = space.reduction(rates, goal.metric) - goal.reduction
    for _ in range(rounds):
        if abs(error) <= tolerance:
            break
        best, best_error = None, error
        for g in range(space.groups):
            for sign in (1, -1):
                if abs(moved[g] + sign) > reach:
                    continue
                candidate = rates.copy()
                candidate[g] = np.clip(candidate[g] + sign * space.steps[g], 0.0, space.max_rate)
                e = space.reduction(candidate, goal.metric) - goal.reduction
                if abs(e) < abs(best_error):
                    best, best_error = (g, sign, candidate), e
        if best is None:
            break
        g, sign, rates = best
        moved[g] += sign
        error = best_error
    return rates
