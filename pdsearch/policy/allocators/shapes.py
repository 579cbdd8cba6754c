"""Calibrated shapes: PD1-PD5 and any (slope, curvature) point, on any CNN.

With a GPR the goal is homogeneous pruning's cost at that GPR (so every PD removes the
same FLOPs or params as PD1, and PDs compare at equal cost); with a budget it is the
budget itself. Either way the exact cost is met, integer channel counts included.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pdsearch.errors import PdsearchError
from pdsearch.policy.allocators.base import Allocator, Problem, register
from pdsearch.policy.distribution import shape
from pdsearch.policy.solve import bisect, refine

if TYPE_CHECKING:
    from pdsearch.policy.policy import Policy


@register
class Calibrated(Allocator):
    name = "calibrated"
    allocates_named_shapes = True
    custom_shapes = True

    def describe(self, policy: Policy) -> str:
        calibrated = f", calibrated on {policy.target}" if policy.budget is None else ""
        return f"allocator {self.name}{calibrated}"

    def rates(self, policy: Policy, problem: Problem) -> np.ndarray:
        space, n = problem.space, len(problem.positions)
        if policy.gpr is not None:
            if policy.gpr == 0:
                return np.zeros(n)
            if policy.gpr / 100 > policy.max_rate:
                raise PdsearchError(f"GPR {policy.gpr:g} exceeds the per-layer maximum rate {policy.max_rate * 100:g}%")
            if policy.slope == 0 and policy.curvature == 0:
                return np.full(n, policy.gpr / 100)  # homogeneous: the GPR itself, in every group
        weights = shape(problem.positions, policy.slope, policy.curvature)
        if not weights.any():
            raise PdsearchError(f"shape (slope {policy.slope}, curvature {policy.curvature}) prunes no layer")
        goal = problem.goal(policy)
        scale = policy.max_rate / weights[weights > 0].min()  # at t = 1 every pruned group sits at the cap

        def rates_at(t: float) -> np.ndarray:
            return np.clip(t * scale * weights, 0.0, policy.max_rate)

        if space.reduction(rates_at(1.0), goal.metric) < goal.reduction - 1e-9:
            asked = f"the {goal.metric} of homogeneous pruning at GPR {policy.gpr:g}" if policy.gpr is not None \
                else goal.describe()
            raise PdsearchError(f"shape (slope {policy.slope}, curvature {policy.curvature}) cannot match {asked} "
                                f"with layer rates capped at {policy.max_rate * 100:g}%")
        _, rates = bisect(rates_at, goal, space)
        return refine(rates, goal, space)
