"""What a trade-off plot shows, whichever library draws it (figures.py: matplotlib PNGs; interactive.py:
Plotly in report.html), as Optuna's visualisation feeds its two back ends from one description."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pdsearch.catalog.objectives import OBJECTIVES
from pdsearch.cost import count_unit
from pdsearch.run.directory import Run


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


@dataclass(frozen=True)
class MeasuredGap:
    """Reduction in FLOPs against the measured reduction of another cost (latency, energy): where they part."""

    x: str  # trials.csv columns
    y: str
    xlabel: str
    ylabel: str
    title: str
    diagonal: str  # what the diagonal means
    where: str  # what measured it (the device), "" if not recorded


def measured_axes(run: Run) -> list[str]:
    """The measured objectives (latency, energy) this run's completed trials have values for."""
    return [name for name, o in OBJECTIVES.items() if o.measures and o.constraint.metric in run.completed.columns]


def predicted_gap(run: Run) -> MeasuredGap | None:
    """The latency table's prediction against the latency measured in the same trials, where a run has both."""
    done = run.completed
    if run.cfg.latency.source != "measured" or not {"latency_predicted_reduction_pct", "latency_reduction_pct"} <= set(
            done.columns) or not done["latency_predicted_reduction_pct"].notna().any():
        return None
    where = str(done["latency_device"].iloc[0]) if "latency_device" in done.columns else ""
    return MeasuredGap("latency_predicted_reduction_pct", "latency_reduction_pct",
                       "latency reduction predicted by the latency table (%)", "measured latency reduction (%)",
                       "latency: the table's prediction vs measured", "prediction = measurement", where)


def measured_gap(run: Run, objective: str) -> MeasuredGap:
    o, flops = OBJECTIVES[objective], OBJECTIVES["flops"].constraint
    device = f"{objective}_device"
    where = str(run.completed[device].iloc[0]) if device in run.completed.columns and len(run.completed) else ""
    name = o.constraint.label.removesuffix(" reduction")
    return MeasuredGap(flops.metric, o.constraint.metric, f"{flops.label} (%)", f"measured {o.constraint.label} (%)",
                       f"FLOPs vs measured {name}", f"{name} falls as FLOPs do", where)
