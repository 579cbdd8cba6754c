"""What a trade-off plot shows, whichever library draws it (matplotlib PNGs, Plotly in report.html),
and how a trial's costs read in one line (the progress output, the hover labels)."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pdsearch.cost import count_unit
from pdsearch.objectives import OBJECTIVES
from pdsearch.rundir import Run


@dataclass(frozen=True)
class CostAxis:
    metric: str  # the trials.csv column
    name: str  # "FLOPs", "parameters", "latency"
    unit: str  # "M", "K", "× baseline"
    scale: float  # values are divided by it
    baseline: float  # where the unpruned model sits, scaled


def cost_axes(run: Run) -> list[str]:
    """The cost objectives a run can plot: the counted ones always, each measured one it measured."""
    return [name for name, o in OBJECTIVES.items()
            if not o.constraint.evolves and (o.measures is None or o.metric in run.completed.columns)]


def cost_axis(run: Run, objective: str) -> CostAxis:
    o = OBJECTIVES[objective]
    if o.measures is None:  # an fvcore count, scaled to K/M/G
        unit, scale = count_unit(run.model[objective])
        baseline = run.model[objective] / scale
    else:  # measured, as a ratio to the baseline measured beside it
        unit, scale, baseline = "× baseline", 1.0, 1.0
    return CostAxis(o.metric, o.label.split(" (")[0], unit or "count", scale, baseline)


def envelope(front: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The front as seen in (cost, accuracy): the policies no cheaper one beats on accuracy."""
    ordered = front.sort_values(metric)
    return ordered[ordered["accuracy"] >= ordered["accuracy"].cummax()]


def reductions(row: pd.Series, objectives: list[str] | None = None) -> str:
    """A trial's cost reductions: 'FLOPs -52.3%, params -48.0%' (``objectives``, or every cost it has)."""
    constraints = [OBJECTIVES[o].constraint for o in (objectives or OBJECTIVES)]
    return ", ".join(f"{c.label.split()[0]} -{float(row[c.metric]):.1f}%" for c in constraints
                     if not c.evolves and c.metric in row and pd.notna(row[c.metric]) and row[c.metric] != "")
