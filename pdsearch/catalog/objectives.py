"""The search's objectives, each declared once.

An objective says which trials.csv column it optimises and in which direction, how it is
labelled, how it becomes a loss in [0, 1] for the hypervolume (1 is the reference
point), what a policy that cannot be built is told, what the trial must measure for it,
and the constraint it offers. Config validation, constraints, the front, the
hypervolume, the report's plots, ``select --prefer`` and the CLI read this table, so
adding an objective is one entry here (plus its measurement, if the trial lacks one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

Base = Mapping[str, float]  # model.json: the baseline's flops and params


@dataclass(frozen=True)
class Constraint:
    name: str  # Optuna's constraint name
    field: str  # the key under search.constraints
    label: str
    metric: str  # the trials.csv column it bounds
    unit: str
    sense: str  # "<=" (a maximum) or ">=" (a minimum)
    percent: bool = True  # a value in [0, 100)
    evolves: bool = False  # True: the metric changes with fine-tuning (accuracy), so only its final value counts


@dataclass(frozen=True)
class Objective:
    name: str
    metric: str  # the trials.csv column optimised
    direction: str  # "max" or "min"
    label: str
    loss: Callable[[float, Base], float]  # the value as a loss in [0, 1] for the hypervolume
    reference: Callable[[Base], str]  # what loss 1 means, for the report
    worst: Callable[[Base], float]  # the value told for a policy that cannot be built (loss 1)
    constraint: Constraint
    # What the trial measures for it beyond accuracy and fvcore counts: the import path of a function
    # (pruned model, baseline, input shape, config, device, precision) -> trials.csv fields, run once however many ask.
    measures: str | None = None
    needs_gpu: bool = False

    @property
    def optuna_direction(self) -> str:
        return "maximize" if self.direction == "max" else "minimize"


def _ratio(name: str, label: str, measures: str, needs_gpu: bool = False) -> Objective:
    """A measured quantity as a ratio to the baseline measured in the same process."""
    return Objective(
        name=name, metric=f"{name}_ratio", direction="min", label=f"{label} (× baseline)",
        loss=lambda v, base: v, reference=lambda base: f"{label} = baseline", worst=lambda base: 1.0,
        constraint=Constraint(f"{name}_reduction", f"min_{name}_reduction", f"{label} reduction",
                              f"{name}_reduction_pct", "%", ">="),
        measures=measures, needs_gpu=needs_gpu,
    )


OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective(
        "accuracy", "accuracy", "max", "validation accuracy (%)", loss=lambda v, base: 1.0 - v / 100.0,
        reference=lambda base: "accuracy 0 %", worst=lambda base: 0.0,
        constraint=Constraint("acc_drop", "max_acc_drop", "acc drop", "acc_drop", " pts", "<=", percent=False,
                              evolves=True)),
    "flops": Objective(
        "flops", "flops", "min", "FLOPs", loss=lambda v, base: v / base["flops"],
        reference=lambda base: "FLOPs = baseline", worst=lambda base: float(base["flops"]),
        constraint=Constraint("flops_reduction", "min_flops_reduction", "FLOPs reduction", "flops_reduction_pct", "%", ">=")),
    "params": Objective(
        "params", "params", "min", "parameters", loss=lambda v, base: v / base["params"],
        reference=lambda base: "params = baseline", worst=lambda base: float(base["params"]),
        constraint=Constraint("params_reduction", "min_params_reduction", "params reduction", "params_reduction_pct",
                              "%", ">=")),
    "latency": _ratio("latency", "latency", "pdsearch.trial.deployment:latency"),
    "energy": _ratio("energy", "energy per image", "pdsearch.trial.deployment:energy", needs_gpu=True),
}


class _Constraints(Mapping[str, Constraint]):
    """The objectives' constraints by name, read from OBJECTIVES on every use: a plugin's entry counts too."""

    def _table(self) -> dict[str, Constraint]:
        return {o.constraint.name: o.constraint for o in OBJECTIVES.values()}

    def __getitem__(self, name: str) -> Constraint:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(OBJECTIVES)


CONSTRAINTS: Mapping[str, Constraint] = _Constraints()


def metrics(objectives: list[str]) -> list[str]:
    """The trials.csv columns that ``objectives`` optimise."""
    return [OBJECTIVES[o].metric for o in objectives]


def directions(objectives: list[str]) -> list[str]:
    return [OBJECTIVES[o].direction for o in objectives]


def given(value: Any) -> bool:
    """A trials.csv cell (or metric) that holds a value: not missing, empty or NaN."""
    return value is not None and value != "" and not (isinstance(value, float) and math.isnan(value))


def reductions(row: Mapping[str, Any], objectives: list[str] | None = None) -> str:
    """A trial's cost reductions: 'FLOPs -52.3%, params -48.0%' (``objectives``, or every cost it has)."""
    constraints = [OBJECTIVES[o].constraint for o in (objectives or OBJECTIVES)]
    return ", ".join(f"{c.label.split()[0]} -{float(row[c.metric]):.1f}%" for c in constraints
                     if not c.evolves and c.metric in row and given(row[c.metric]))
