"""Policy: GPR + pruning distribution + criterion, and its per-layer rates."""
from pdsearch.policy.distribution import calibrated_rates, shape
from pdsearch.policy.flexiprune import TABLES, architecture, flexiprune_rates
from pdsearch.policy.policy import CRITERIA, PD_SHAPES, Policy, normalize_pd

__all__ = [
    "CRITERIA", "PD_SHAPES", "Policy", "TABLES", "architecture", "calibrated_rates",
    "flexiprune_rates", "normalize_pd", "shape",
]
