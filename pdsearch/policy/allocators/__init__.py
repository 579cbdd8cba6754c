"""Allocators: a policy's budget in, per-group rates (and criteria) out, one module each.

To add one, write a module with an ``Allocator`` subclass decorated with ``@register``
and import it below: the config, the search space, trials, reports and selection read
the registry.
"""
from pdsearch.policy.allocators import flexiprune, loss_aware, sensitivity, shapes  # noqa: F401  (registers)
from pdsearch.policy.allocators.base import (
    ALLOCATORS,
    Allocation,
    Allocator,
    LossProbe,
    Needs,
    Problem,
    Settings,
    allocator_for,
    distribution_allocators,
    goal_of,
    modes,
    register,
)
from pdsearch.policy.allocators.sensitivity import SensitivityProfile

__all__ = ["ALLOCATORS", "Allocation", "Allocator", "LossProbe", "Needs", "Problem", "SensitivityProfile", "Settings",
           "allocator_for", "distribution_allocators", "goal_of", "modes", "register"]
