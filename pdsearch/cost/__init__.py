"""Cost of a model: fvcore counts of real models, and an analytic model of a policy."""
from pdsearch.cost.analytic import CostModel
from pdsearch.cost.count import count_cost, count_unit, human_count

__all__ = ["CostModel", "count_cost", "count_unit", "human_count"]
