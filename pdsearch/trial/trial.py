"""One trial: prune the baseline with one policy, fine-tune it, measure it.

baseline weights -> allocation (per-group rates, and criteria where the allocator picks
them) -> prune -> accuracy before fine-tune -> fine-tune -> val/test accuracy, with
fvcore's count of the pruned model. A trial that diverges, runs out of memory or asks
for something impossible returns status "failed" with its reason, never NaN.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from pdsearch.config import SearchConfig
from pdsearch.cost import count_cost
from pdsearch.cost.latency_table import LatencyTable
from pdsearch.data.bundle import DataBundle
from pdsearch.errors import PdsearchError
from pdsearch.planning import Plan, Planner
from pdsearch.policy import Policy, SensitivityProfile
from pdsearch.pruning import analyze, prune
from pdsearch.space import SearchSpace, policy_fields
from pdsearch.trial.baseline import Baseline, model_and_data
from pdsearch.trial.channel_switch import training_batches
from pdsearch.trial.deployment import measure_deployment, predicted_latency
from pdsearch.trial.loss_probe import loss_probe_factory
from pdsearch.trial.quantized import measure_deployed
from pdsearch.trial.training import Diverged, Teacher, evaluate, prepare, recalibrate_batchnorm, train

# The status of a trial's reports before its last: a trial whose last report says so was stopped by the scheduler.
RUNNING = "running"
ACCURACY_FIELDS = ("accuracy", "test_accuracy", "accuracy_before_finetune", "accuracy_pruned", "acc_drop")
QUANTIZED_FIELDS = ("accuracy_fp32", "test_accuracy_fp32", "quantization_drop", "quantization_seconds")
Report = Callable[[dict[str, Any]], None]


@dataclass
class TrialContext:
    """What every trial of a search shares: the baseline model, the data, its analysis."""

    baseline: Baseline
    model: nn.Module  # the baseline, on the CPU, never modified
    data: DataBundle
    planner: Planner
    on_device: dict[str, nn.Module] = field(default_factory=dict)  # the baseline per device, for timing
    latency_key: dict[str, Any] | None = None  # the latency table's, where the search has one

    def baseline_on(self, device: torch.device) -> nn.Module:
        if str(device) not in self.on_device:
            self.on_device[str(device)] = prepare(copy.deepcopy(self.model), device).eval()
        return self.on_device[str(device)]


_CONTEXT: dict[str, TrialContext] = {}


def trial_context(cfg: SearchConfig, baseline: Baseline, latency_table: dict[str, Any] | None = None
                  ) -> TrialContext:
    """Built once per worker process (Tune reuses actors), not once per trial.

    Keyed by the baseline's config and a digest of its weights, so other weights under
    the same config never get a stale model.
    """
    digest = sum(float(t.double().sum()) for t in baseline.state_dict.values() if t.is_floating_point())
    key = f"{baseline.key}:{digest!r}:{latency_table is not None}"
    if key not in _CONTEXT:
        _CONTEXT.clear()
        model, data = model_and_data(cfg)
        model.load_state_dict(baseline.state_dict)
        model.eval()
        table = LatencyTable.from_dict(latency_table) if latency_table is not None else None
        planner = Planner(model, input_size=data.input_size, in_channels=data.in_channels, latency_table=table)
        _CONTEXT[key] = TrialContext(baseline, model, data, planner, latency_key=table.key if table else None)
    return _CONTEXT[key]


def allocate(ctx: TrialContext, policy: Policy, cfg: SearchConfig, device: torch.device,
             profile: SensitivityProfile | None = None, loss_paths: dict[str, Any] | None = None) -> Plan:
    """The policy's plan on the baseline, with whatever its allocator measures (profile, losses) or reads
    (the run's allocation paths)."""
    return ctx.planner.plan(
        policy, settings=cfg.space.settings(), profile=profile, paths=loss_paths,
        probe=loss_probe_factory(ctx.model, ctx.data, cfg.finetune.lr, device, seed=policy.seed),
    )


def prune_baseline(ctx: TrialContext, rates, policy: Policy, criteria: Sequence[str] | None = None) -> nn.Module:
    """A pruned copy of the baseline (the baseline itself stays intact)."""
    structure = analyze(copy.deepcopy(ctx.model), ctx.data.input_size, ctx.data.in_channels)
    batches = itertools.islice(ctx.data.batches("train", torch.device("cpu"), train=True, seed=policy.seed), 4)
    return prune(structure, rates, criteria or policy.criterion, seed=policy.seed, batches=batches)


def finetune_and_measure(ctx: TrialContext, pruned: nn.Module, cfg: SearchConfig, seed: int, device: torch.device,
                         on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                         precision: str = "fp32") -> dict[str, float]:
    """Screen (BatchNorm re-estimated), fine-tune, measure in the precision the policy ships in.

    ``on_epoch(e, accuracies)`` at 0 (the screening) and after each epoch: the validation
    accuracy then (FP32), with the raw and screening accuracies, which any objective may read.
    """
    pruned = prepare(pruned, device)
    raw = evaluate(pruned, ctx.data, "val", device)
    if cfg.finetune.bn_recalibration_batches:
        recalibrate_batchnorm(pruned, training_batches(ctx.data, device, cfg.finetune.bn_recalibration_batches, seed))
    before = evaluate(pruned, ctx.data, "val", device)
    screened = {"accuracy_pruned": raw, "accuracy_before_finetune": before}
    if on_epoch:
        on_epoch(0, {"accuracy": before, **screened})
    torch.manual_seed(seed)
    after_epoch = (lambda e: on_epoch(e, {"accuracy": evaluate(pruned, ctx.data, "val", device), **screened})) \
        if on_epoch else None
    distill = cfg.finetune.distill
    teacher = Teacher(ctx.baseline_on(device), distill.weight, distill.temperature) if distill.weight > 0 else None
    train(pruned, ctx.data, cfg.finetune, device, seed=seed, after_epoch=after_epoch, teacher=teacher)
    measured = {"accuracy": evaluate(pruned, ctx.data, "val", device),
                "test_accuracy": evaluate(pruned, ctx.data, "test", device)}
    measured.update(measure_deployed(pruned, ctx.planner.structure.example_input, ctx.data, precision,
                                     cfg.quantization, measured, torch.get_num_threads()))
    return {**measured, "accuracy_before_finetune": before, "accuracy_pruned": raw,
            "acc_drop": ctx.baseline.val_accuracy - measured["accuracy"]}


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def run_trial(params: dict[str, Any], cfg: SearchConfig, baseline: Baseline, device: torch.device,
              profile: SensitivityProfile | None = None, report: Report | None = None,
              latency_table: dict[str, Any] | None = None, loss_paths: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """Metrics of one policy, averaged over ``space.repeats`` seeds; status 'ok' or 'failed'.

    The allocation and the cost depend on the policy alone; only pruning (random
    criterion) and fine-tuning depend on the seed, so only they are repeated. ``report``
    receives the first seed's screening accuracy (epoch 0) and its accuracy after each
    fine-tune epoch, with the cost from the start, so a scheduler can stop the trial
    (status 'running' on these results: a trial whose last result says so was stopped).
    """
    start = time.time()
    ctx = trial_context(cfg, baseline, latency_table)
    space = SearchSpace(cfg)
    policy = space.policy(params)
    cfg = cfg.with_distill(space.distill_weight(params))
    runs = []
    try:
        plan = allocate(ctx, policy, cfg, device, profile, loss_paths)
        # the cost, measured ones too, is known from the start: schedulers read it at every rung
        pruned = prune_baseline(ctx, plan.rates, policy, plan.criteria)
        plan, pruned, cost = meet_measured_latency(ctx, policy, (plan, pruned, trial_cost(ctx, plan, pruned, cfg, device)),
                                                   cfg, device, profile, loss_paths)
        for r in range(cfg.space.repeats):
            seeded = dataclasses.replace(policy, seed=policy.seed + r)
            if r:
                pruned = prune_baseline(ctx, plan.rates, seeded, plan.criteria)
            on_epoch = None
            if r == 0 and report is not None:
                fields = {**cost, **policy_fields(policy, plan.gpr, plan.criteria), "status": RUNNING,
                          "distill": cfg.finetune.distill.weight}
                on_epoch = lambda e, acc: report({"epoch": e, "epochs": e, **acc,  # noqa: E731
                                                  "acc_drop": ctx.baseline.val_accuracy - acc["accuracy"], **fields})
            runs.append(finetune_and_measure(ctx, pruned, cfg, seeded.seed, device, on_epoch, policy.precision))
    except PdsearchError as exc:  # a property of the policy: retrying would fail the same way
        return _failed(policy, str(exc), start, device)
    except Diverged as exc:
        return _failed(policy, f"diverged: {exc}", start, device)
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return _failed(policy, "out of memory", start, device)
    metrics: dict[str, Any] = {}
    for key in [k for k in runs[0] if k in ACCURACY_FIELDS or k in QUANTIZED_FIELDS]:
        values = [run[key] for run in runs]
        metrics[key] = statistics.fmean(values)
        if key != "quantization_seconds":
            metrics[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    if not all(math.isfinite(metrics[k]) for k in ACCURACY_FIELDS):
        return _failed(policy, "non-finite accuracy", start, device)
    metrics.update(
        **cost, epoch=cfg.finetune.epochs, epochs=cfg.finetune.epochs * cfg.space.repeats,
        rates=[float(r) for r in plan.rates], status="ok", failure_reason="",
        allocation_seconds=plan.allocation_seconds, seconds=time.time() - start, **_where(device),
        **policy_fields(policy, plan.gpr, plan.criteria), distill=cfg.finetune.distill.weight,
    )
    return metrics


def trial_cost(ctx: TrialContext, plan: Plan, pruned: nn.Module, cfg: SearchConfig, device: torch.device
               ) -> dict[str, Any]:
    """fvcore's count, the table's prediction and what the objectives measure (latency, energy)."""
    cost: dict[str, Any] = _cost_fields(count_cost(pruned, ctx.planner.structure.example_input), ctx)
    cost.update(predicted_latency(plan.latency, cfg, ctx.latency_key))
    shape = ctx.planner.structure.example_input.shape[1:]
    cost.update(measure_deployment(pruned, ctx.baseline_on(device), shape, cfg, device, plan.policy.precision))
    return cost


Attempt = tuple[Plan, nn.Module, dict[str, Any]]


def meet_measured_latency(ctx: TrialContext, policy: Policy, attempt: Attempt, cfg: SearchConfig,
                          device: torch.device, profile: SensitivityProfile | None = None,
                          loss_paths: dict[str, Any] | None = None) -> Attempt:
    """NetAdapt's loop where the trial runs on the target: a latency budget is planned on the table's
    prediction, then measured; a miss of more than ``latency.budget_tolerance`` points moves the aim by
    the miss (divided by the secant's slope once there are two attempts) and prunes the baseline again,
    at most ``latency.corrections`` times. The attempt measured nearest the budget counts
    (``latency_aim_pct``: the aim it was planned at)."""
    plan, pruned, cost = attempt
    if policy.budget_metric != "latency" or cost.get("latency_source") != "measured":
        return attempt
    best, aim = attempt, policy.budget
    cost["latency_aim_pct"] = aim
    seconds, tried = plan.allocation_seconds, [(aim, cost["latency_reduction_pct"])]  # (aim, measured)
    for _ in range(cfg.latency.corrections):
        miss = policy.budget - tried[-1][1]
        if abs(miss) <= cfg.latency.budget_tolerance:
            break
        aim = min(max(aim + miss / _slope(tried), 0.5), 99.0)
        try:
            plan = allocate(ctx, dataclasses.replace(policy, budget=aim), cfg, device, profile, loss_paths)
        except PdsearchError:  # the moved aim is out of reach: keep what was measured
            break
        seconds += plan.allocation_seconds
        pruned = prune_baseline(ctx, plan.rates, policy, plan.criteria)
        cost = {**trial_cost(ctx, plan, pruned, cfg, device), "latency_aim_pct": aim}
        tried.append((aim, cost["latency_reduction_pct"]))
        if abs(policy.budget - tried[-1][1]) < abs(policy.budget - best[2]["latency_reduction_pct"]):
            best = (plan, pruned, cost)
    return dataclasses.replace(best[0], allocation_seconds=seconds), best[1], best[2]


def _slope(tried: list[tuple[float, float]]) -> float:
    """Measured points per point of aim, from the last two attempts (the secant), 1 until there are two:
    a table that is off by a factor is corrected in one step, not approached by halves."""
    if len(tried) < 2 or tried[-1][0] == tried[-2][0]:
        return 1.0
    (a0, m0), (a1, m1) = tried[-2:]
    return min(max((m1 - m0) / (a1 - a0), 0.5), 3.0)


def _cost_fields(cost, ctx: TrialContext) -> dict[str, float]:
    base = ctx.planner.cost_model.base
    return {"flops": cost.flops, "params": cost.params,
            "flops_reduction_pct": 100.0 * (1 - cost.flops / base.flops),
            "params_reduction_pct": 100.0 * (1 - cost.params / base.params)}


def _where(device: torch.device) -> dict[str, Any]:
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else socket.gethostname()
    except Exception:
        node = socket.gethostname()
    return {"device": str(device), "node_id": node}


def _failed(policy: Policy, reason: str, start: float, device: torch.device) -> dict[str, Any]:
    # Finite placeholders keep Ray Tune's metric checks quiet; the searcher tells Optuna FAIL.
    return {"status": "failed", "failure_reason": reason, "accuracy": 0.0, "test_accuracy": 0.0,
            "accuracy_before_finetune": 0.0, "accuracy_pruned": 0.0, "acc_drop": 100.0, "flops": -1, "params": -1,
            "epochs": 0,
            "flops_reduction_pct": 0.0, "params_reduction_pct": 0.0, "rates": [], "allocation_seconds": 0.0,
            "seconds": time.time() - start, **_where(device), **policy_fields(policy)}
