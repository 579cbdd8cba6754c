"""Policy: how much to prune (GPR or budget), how to spread it (allocator), which filters (criterion)."""
from pdsearch.policy.allocators import ALLOCATORS, Allocation, Needs, Problem, SensitivityProfile, goal_of
from pdsearch.policy.criteria import CRITERIA
from pdsearch.policy.distribution import shape
from pdsearch.policy.flexiprune_tables import TABLES, architecture, flexiprune_rates
from pdsearch.policy.policy import PD_SHAPES, Policy, normalize_pd
from pdsearch.policy.solve import CostSpace, Goal

__all__ = [
    "ALLOCATORS", "Allocation", "CRITERIA", "CostSpace", "Goal", "Needs", "PD_SHAPES", "Policy", "Problem",
    "SensitivityProfile", "TABLES", "architecture", "flexiprune_rates", "goal_of", "normalize_pd", "shape",
]
