"""Automated policy selection: constraints and a preference pick one policy off the front.

The pick is written to RUN_DIR/policy.json; ``--export`` hands the pick to export.py,
which reruns it and saves the model.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdsearch.catalog.objectives import CONSTRAINTS, OBJECTIVES
from pdsearch.config import Constraints, override_constraints
from pdsearch.errors import NoFeasiblePolicy, PdsearchError
from pdsearch.files import atomic_path
from pdsearch.planning import Plan, Planner
from pdsearch.policy import Policy
from pdsearch.registry import unknown
from pdsearch.reporting.export import Export, export_model, export_record, plain
from pdsearch.run.directory import POLICY_JSON, Run, load_run
from pdsearch.run.lock import run_lock

PREFERENCES = ("knee", *OBJECTIVES)
METRICS = ("accuracy", "accuracy_std", "test_accuracy", "test_accuracy_std", "acc_drop", "flops", "params",
           "flops_reduction_pct", "params_reduction_pct", "accuracy_fp32", "test_accuracy_fp32", "quantization_drop")


@dataclass
class Selection:
    policy: Policy
    trial: dict[str, Any]  # the trial's row of trials.csv
    plan: Plan
    reason: str
    constraints: Constraints
    front: pd.DataFrame  # the feasible Pareto front it was picked from
    record: dict[str, Any]  # what policy.json holds
    path: Path  # policy.json
    note: str = ""  # why the study was read rather than trials.csv


def select(
    run_dir: str | Path,
    *,
    prefer: str = "knee",
    export: str | Path | None = None,
    finetune_epochs: int | None = None,
    distill: float | None = None,
    source: str = "auto",
    trial: str | None = None,
    precision: str | None = None,
    **limits: float | None,
) -> Selection:
    """Pick one policy of a run; constraints not given are the search's own.

    ``limits``: max_acc_drop, min_flops_reduction, min_params_reduction, min_latency_reduction, ...
    (one per objective, objectives.CONSTRAINTS).

    ``trial`` names one completed trial to take instead (constraints and preference aside).

    ``precision`` picks from the policies that ship in it (their own front); without it, from the
    whole front, each policy exported in its own precision.

    ``export`` reruns the policy and saves the model: with the trial's fine-tuning, or
    ``finetune_epochs`` epochs, distilled at the trial's weight or at ``distill``.

    Raises NoFeasiblePolicy (exit code 3), naming the closest policy, when none qualifies.
    """
    if prefer not in PREFERENCES:
        raise PdsearchError(unknown("preference", prefer, PREFERENCES))
    if finetune_epochs is not None and (not isinstance(finetune_epochs, int) or finetune_epochs < 1):
        raise PdsearchError(f"finetune epochs must be a positive integer, got {finetune_epochs!r}")
    if distill is not None and not 0 <= distill <= 1:
        raise PdsearchError(f"the distillation weight lies in [0, 1] (0: off), got {distill:g}")
    request = Export(Path(export), finetune_epochs, distill) if export else None
    if request:
        request.check()
    # an export reruns the policy on the run's baseline: one writer, from before the run is read
    with run_lock(Path(run_dir), "pdsearch select --export", create=False) if request else contextlib.nullcontext():
        run = load_run(run_dir, source)
        return _select(run.in_precision(precision) if precision else run, prefer, request, trial, limits)


def _select(run: Run, prefer: str, export: Export | None, trial: str | None,
            limits: dict[str, float | None]) -> Selection:
    constraints = override_constraints(run.cfg.search.constraints, **limits)
    if not len(run.completed):
        raise PdsearchError(f"{run.run_dir} has no completed trial yet: nothing to select from")
    front = run.front(constraints)
    if trial is not None:
        chosen = run.completed[run.completed["trial_id"] == str(trial)]
        if not len(chosen):
            raise PdsearchError(f"{run.run_dir} has no completed trial {trial!r}")
        row, why = chosen.iloc[0], f"trial {trial} asked for by name"
    elif not len(front):
        raise NoFeasiblePolicy(closest_miss(run.completed, constraints))
    else:
        row, why = pick(front, prefer, run.cfg.search.objectives)
    policy, plan = recorded_plan(run, row)
    record = {
        "policy": policy.to_dict(),
        "allocator": policy.allocator.name,
        "trial_id": row["trial_id"],
        "model": run.model["name"],
        "layers": plan.layers,
        "rates": plan.rates,
        "criteria": plan.criteria,
        "gpr": plan.gpr,
        "flexiprune_list": plan.flexiprune_list,
        "metrics": {k: plain(row[k]) for k in METRICS if k in row},
        "baseline": {"val_accuracy": (run.baseline or {}).get("val_accuracy"), "flops": run.model["flops"],
                     "params": run.model["params"]},
        "selection": {"preference": prefer, "constraints": constraints.model_dump(), "front_size": len(front),
                      "reason": why},
        "export": None,
    }
    path = run.run_dir / POLICY_JSON
    if export:  # the export's own record sits beside it; policy.json stays the last selection
        record["export"] = export_model(run, policy, plan, row, export, record)
        with atomic_path(export_record(export.path)) as tmp:
            tmp.write_text(json.dumps(record, indent=2))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return Selection(policy, dict(row), plan, why, constraints, front, record, path, run.note)


def pick(front: pd.DataFrame, prefer: str, objectives: list[str]) -> tuple[pd.Series, str]:
    """One row of the feasible front, and why.

    knee: every objective is min-max scaled over the front to [0, 1] (1 = the best value
    on the front), and the policy nearest (Euclidean) to the ideal point (1, ..., 1) wins:
    the best compromise, independent of the objectives' units. Ties go to accuracy.
    """
    n = len(front)
    if prefer in OBJECTIVES:
        o = OBJECTIVES[prefer]
        if o.metric not in front.columns:
            raise PdsearchError(f"this run did not measure {prefer}: prefer one of knee, {', '.join(objectives)}")
        tie = OBJECTIVES[next(name for name in [*objectives, *OBJECTIVES] if name != prefer)]  # then the next objective
        ordered_front = front.sort_values([o.metric, tie.metric], ascending=[o.direction == "min", tie.direction == "min"])
        best = "highest" if o.direction == "max" else "lowest"
        return ordered_front.iloc[0], f"{best} {o.label} among the {n} feasible Pareto policies"
    scaled = []
    for objective in objectives:
        o = OBJECTIVES[objective]
        values = front[o.metric].astype(float) * (1 if o.direction == "max" else -1)
        span = values.max() - values.min()
        scaled.append((values - values.min()) / span if span > 0 else pd.Series(1.0, index=values.index))
    distance = np.sqrt(sum((1 - s) ** 2 for s in scaled))
    order = pd.DataFrame({"d": distance.round(9), "acc": -front["accuracy"]}, index=front.index).sort_values(["d", "acc"])
    best = order.index[0]
    runner_up = f"; next best {order['d'].iloc[1]:.3f}" if n > 1 else ""
    return front.loc[best], (f"knee of the {n} feasible Pareto policies: nearest to the ideal point after scaling "
                             f"{', '.join(objectives)} to [0, 1] over the front (distance {order['d'].iloc[0]:.3f}{runner_up})")


def closest_miss(trials: pd.DataFrame, constraints: Constraints) -> str:
    """The completed policy that misses the constraints by the fewest points, and by how much."""
    misses = [(sum(max(0.0, v) for v in constraints.violations(row).values()), i) for i, row in trials.iterrows()]
    _, best = min(misses)
    row = trials.loc[best]
    parts = []
    for name, v in constraints.violations(row).items():
        c = CONSTRAINTS[name]
        if v > 0:
            parts.append(f"{c.label} by {v:.2f} points ({row[c.metric]:.2f}{c.unit})")
    return (f"no completed policy meets {constraints.describe()}; the closest is GPR {row['gpr']:g}% {row['pd']} "
            f"{row['criterion']} (trial {row['trial_id']}), which misses {' and '.join(parts)}")


def recorded_plan(run: Run, row: pd.Series) -> tuple[Policy, Plan]:
    """The trial's policy and the rates (and criteria) it recorded: a data-driven allocation is never re-planned."""
    policy = run.space.policy_of_row(row)
    criteria = json.loads(row["criteria"]) if isinstance(row.get("criteria"), str) and row["criteria"] else None
    planner = Planner.from_info(run.cfg.model.name, run.model, run.cfg.model.kwargs)
    plan = planner.plan_rates(policy, json.loads(row["rates"]), criteria)
    plan.gpr = float(row["gpr"])
    return policy, plan


def describe(selection: Selection) -> str:
    """Why this policy, with its constraint values, for the CLI."""
    row, c = selection.trial, selection.constraints
    shipped = "" if selection.policy.precision == "fp32" else f", {selection.policy.precision}"
    lines = [f"selected: {selection.policy.amount} {row['pd']} criterion {_criteria_label(selection)}{shipped} "
             f"(trial {row['trial_id']})",
             f"  why: {selection.reason}"]
    for con in CONSTRAINTS.values():
        limit = c.limit(con.field)
        if con.metric not in row or row[con.metric] in ("", None):
            continue  # not measured in this run (latency, energy)
        bound = f" (constraint {con.sense} {limit:g}{con.unit})" if limit is not None else " (no constraint)"
        lines.append(f"  {con.label}: {float(row[con.metric]):.2f}{con.unit}{bound}")
    lines.append(f"  val accuracy {row['accuracy']:.2f}%, test {row['test_accuracy']:.2f}%; "
                 f"FLOPs {int(row['flops']):,}, params {int(row['params']):,}")
    lines.append(f"written: {selection.path}")
    export = selection.record["export"]
    if export:
        lines.append(f"exported: {export['path']} ({export['source']}); val accuracy {export['val_accuracy']:.2f}%, "
                     f"test {export['test_accuracy']:.2f}%; load with {export['load']}")
        shape, normalise = export["input"]["shape"], export["input"]
        lines.append(f"  input: batches of {'x'.join(map(str, shape))} images (channels x height x width), pixels in "
                     f"[0, 1] normalised per channel with mean {normalise['mean']} and std {normalise['std']}")
    return "\n".join(lines)



def _criteria_label(selection: Selection) -> str:
    criteria = selection.plan.criteria
    return f"per group {','.join(criteria)}" if criteria else selection.policy.criterion
