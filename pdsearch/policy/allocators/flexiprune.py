"""FlexiPrune's published tables (AlexNet, VGG11/13/16/19) as an allocator.

With a budget the GPR is found by bisection; the tables' rates are whole percents, so
the built model lands within a point of the budget rather than on it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pdsearch.errors import PdsearchError
from pdsearch.policy.allocators.base import Allocator, Problem, register
from pdsearch.policy.flexiprune_tables import TABLES, architecture, flexiprune_rates
from pdsearch.policy.solve import bisect

if TYPE_CHECKING:
    from pdsearch.policy.policy import Policy


@register
class FlexiPrune(Allocator):
    name = "flexiprune"
    allocates_named_shapes = True
    published_rates = True

    def validate(self, policy: Policy) -> None:
        super().validate(policy)
        if policy.pd is None:
            raise PdsearchError("flexiprune mode needs a named PD (PD1-PD5), not a custom shape")

    def rates(self, policy: Policy, problem: Problem) -> np.ndarray:
        arch = architecture(problem.kinds)
        if policy.gpr is not None:
            return np.array(flexiprune_rates(arch, policy.pd, policy.gpr))
        top = 5000 / max(TABLES[arch][policy.pd]) - 1e-6  # the GPR at which a layer would reach 100%
        _, rates = bisect(lambda t: np.array(flexiprune_rates(arch, policy.pd, t * top)),
                          problem.goal(policy), problem.space)
        return rates
