"""Automated policy selection: constraints and a preference pick one policy off the front.

The pick is written to RUN_DIR/policy.json. Trials keep no weights (a sweep would store
thousands of models), so ``export`` reruns the chosen policy: the same baseline, rates,
seed and fine-tuning (or a longer one), which on the same device reproduces the trial.
The model is saved, by the export path's suffix, with ``torch.export`` (``.pt2``: plain torch
loads it without pdsearch, ``torch.export.load(path).module()``) or as ONNX (``.onnx``, for
ONNX Runtime, TensorRT, OpenVINO), checked at export against PyTorch on a real batch.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pdsearch.config import Constraints, override_constraints
from pdsearch.cost.latency import ONNX_OPSET, export_onnx
from pdsearch.errors import NoFeasiblePolicy, PdsearchError
from pdsearch.files import atomic_path
from pdsearch.catalog.objectives import CONSTRAINTS, OBJECTIVES, given
from pdsearch.planning import Plan, Planner
from pdsearch.policy import Policy
from pdsearch.registry import unknown
from pdsearch.run.directory import POLICY_JSON, Run, load_run
from pdsearch.run.lock import run_lock
from pdsearch.catalog.runtimes import RUNTIMES

PREFERENCES = ("knee", *OBJECTIVES)
METRICS = ("accuracy", "accuracy_std", "test_accuracy", "test_accuracy_std", "acc_drop", "flops", "params",
           "flops_reduction_pct", "params_reduction_pct")


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
    **limits: float | None,
) -> Selection:
    """Pick one policy of a run; constraints not given are the search's own.

    ``limits``: max_acc_drop, min_flops_reduction, min_params_reduction, min_latency_reduction, ...
    (one per objective, objectives.CONSTRAINTS).

    ``trial`` names one completed trial to take instead (constraints and preference aside).

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
    if request and not request.path.parent.resolve().is_dir():
        raise PdsearchError(f"cannot export to {request.path}: folder {request.path.parent} does not exist")
    if request and request.path.suffix not in EXPORT_FORMATS:
        raise PdsearchError(f"cannot export to {request.path}: the format follows the suffix, one of "
                            f"{', '.join(EXPORT_FORMATS)}")
    if request and request.path.suffix == ".onnx":
        RUNTIMES["onnxruntime"].check_installed()
    # an export reruns the policy on the run's baseline: one writer, from before the run is read
    with run_lock(Path(run_dir), "pdsearch select --export", create=False) if request else contextlib.nullcontext():
        return _select(load_run(run_dir, source), prefer, request, trial, limits)


@dataclass(frozen=True)
class Export:
    """What ``select --export`` asks for: where, and the final fine-tune (None: as the trial did)."""

    path: Path
    finetune_epochs: int | None = None
    distill: float | None = None


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
        "metrics": {k: _plain(row[k]) for k in METRICS if k in row},
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


def export_record(export: Path) -> Path:
    """Where an exported model's policy record is written: beside it, named after it (pruned.pt2.json)."""
    return export.with_name(export.name + ".json")


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


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def export_model(run: Run, policy: Policy, plan: Plan, row: pd.Series, export: Export,
                 record: dict[str, Any]) -> dict[str, Any]:
    """Rerun ``policy`` (prune the cached baseline, fine-tune as the trial did) and save it with torch.export."""
    from pdsearch.cost import count_cost
    from pdsearch.trial.baseline import cached_baseline
    from pdsearch.trial.training import default_device, use_threads
    from pdsearch.trial.trial import finetune_and_measure, prune_baseline, trial_context

    cfg = run.cfg
    baseline = cached_baseline(cfg, run.run_dir)
    if baseline is None:
        raise PdsearchError(f"{run.run_dir}/baseline holds no weights for this configuration: cannot rerun the policy")
    path, finetune_epochs = export.path, export.finetune_epochs
    if finetune_epochs:
        cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"epochs": finetune_epochs})})
    trial_distill = run.space.distill_weight({"distill": row["distill"]} if given(row.get("distill")) else {})
    cfg = cfg.with_distill(trial_distill if export.distill is None else export.distill)
    device = default_device()
    threads = use_threads(cfg)  # as the trial ran, so CPU reruns reproduce it
    try:
        ctx = trial_context(cfg, baseline)
        pruned = prune_baseline(ctx, np.array(plan.rates), policy, plan.criteria)
        measured = finetune_and_measure(ctx, pruned, cfg, policy.seed, device)
    finally:
        torch.set_num_threads(threads)
    model = pruned.to("cpu", torch.float32).to(memory_format=torch.contiguous_format).eval()
    example = ctx.planner.structure.example_input
    cost = count_cost(model, example)
    info = {
        "path": str(path),
        "format": "torch.export ExportedProgram (dynamic batch size)",
        "load": f"torch.export.load({str(path)!r}).module()",
        "input": {"shape": list(example.shape[1:]), "pixels": "in [0, 1]", "mean": list(ctx.data.mean),
                  "std": list(ctx.data.std), "normalise": "(pixels - mean) / std per channel"},
        "source": "deterministic rerun of the trial's policy (same baseline, rates, seed"
                  + (", fine-tuning" if not finetune_epochs else f"; fine-tuned {finetune_epochs} epochs instead of {run.cfg.finetune.epochs}")
                  + (f"; distilled from the baseline at weight {cfg.finetune.distill.weight:g})"
                     if cfg.finetune.distill.weight > 0 else "; no distillation)"),
        "finetune_epochs": cfg.finetune.epochs,
        "distill": cfg.finetune.distill.model_dump() if cfg.finetune.distill.weight > 0 else None,
        "device": str(device),
        "val_accuracy": measured["accuracy"],
        "test_accuracy": measured["test_accuracy"],
        "flops": cost.flops,
        "params": cost.params,
    }
    real = next(iter(ctx.data.batches("val", torch.device("cpu"))))[0][:16]
    info.update(EXPORT_FORMATS[path.suffix](model, real, path, {**record, "export": info}))
    return info


def save_pt2(model: torch.nn.Module, batch: torch.Tensor, path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """torch.export with a dynamic batch size; the record rides along as an extra file."""
    with torch.no_grad():
        program = torch.export.export(model, (batch[:2],), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp, extra_files={"policy.json": json.dumps(record)})
    return {}


ONNX_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}  # float32 kernels of two runtimes, on logits


def save_onnx(model: torch.nn.Module, batch: torch.Tensor, path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """ONNX with a dynamic batch size and the record in its metadata; ONNX Runtime must match PyTorch on ``batch``."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load_from_string(export_onnx(model, batch, ONNX_OPSET, dynamic_batch=True))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    with torch.no_grad():
        want = model(batch).numpy()
    error = float(np.abs(got - want).max())
    if not np.allclose(got, want, **ONNX_TOLERANCE):
        raise PdsearchError(f"the ONNX export differs from PyTorch by up to {error:.3g} on a validation batch "
                            f"(tolerance atol {ONNX_TOLERANCE['atol']:g}, rtol {ONNX_TOLERANCE['rtol']:g}): not written")
    fields = {"format": f"ONNX (opset {ONNX_OPSET}, dynamic batch size)", "opset": ONNX_OPSET,
              "load": f"onnxruntime.InferenceSession({str(path)!r})",
              "check": {"batch": len(batch), "max_abs_diff": error, **ONNX_TOLERANCE}}
    onnx.helper.set_model_props(proto, {"policy.json": json.dumps({**record, "export": {**record["export"], **fields}})})
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return fields


EXPORT_FORMATS = {".pt2": save_pt2, ".onnx": save_onnx}  # by the export path's suffix


def describe(selection: Selection) -> str:
    """Why this policy, with its constraint values, for the CLI."""
    row, c = selection.trial, selection.constraints
    lines = [f"selected: {selection.policy.amount} {row['pd']} criterion {_criteria_label(selection)} (trial {row['trial_id']})",
             f"  why: {selection.reason}"]
    for con in CONSTRAINTS.values():
        limit = getattr(c, con.field)
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
    return "\n".join(lines)



def _criteria_label(selection: Selection) -> str:
    criteria = selection.plan.criteria
    return f"per group {','.join(criteria)}" if criteria else selection.policy.criterion
