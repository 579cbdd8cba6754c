"""Cost of a model: fvcore counts of real models, and an analytic model of a policy."""
from pdsearch.cost.analytic import CostModel
from pdsearch.cost.count import count_cost

__all__ = ["CostModel", "count_cost"]
