"""One trial: prune the baseline with one policy, fine-tune it, measure it.

baseline weights -> per-layer rates (planning) -> prune -> accuracy before fine-tune ->
fine-tune -> val/test accuracy, with fvcore's count of the pruned model. A trial that
diverges or runs out of memory returns status "failed" with its reason, never NaN.
"""
from __future__ import annotations

import copy
import math
import socket
import statistics
import time
from typing import Any

import torch
from torch import nn

from pdsearch.baseline import model_and_data
from pdsearch.config import SearchConfig
from pdsearch.cost import count_cost
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune
from pdsearch.training import Diverged, evaluate, prepare, train

ACCURACY_FIELDS = ("accuracy", "test_accuracy", "accuracy_before_finetune", "acc_drop")


def policy_from_params(params: dict[str, Any], cfg: SearchConfig) -> Policy:
    """The Policy a sampler's parameters (gpr, pd or slope/curvature, criterion, seed) describe."""
    shape = {"pd": params["pd"]} if "pd" in params else {"pd": None, "slope": params["slope"], "curvature": params["curvature"]}
    return Policy(
        gpr=float(params["gpr"]), criterion=params.get("criterion", cfg.space.criteria[0]), mode=cfg.space.mode,
        target=cfg.space.target, max_rate=cfg.space.max_rate, seed=int(params.get("seed", cfg.space.seeds[0])), **shape,
    )


def _baseline_model(cfg: SearchConfig, baseline: dict[str, Any]) -> tuple[nn.Module, Any]:
    model, data = model_and_data(cfg)
    model.load_state_dict(baseline["state_dict"])
    return model.eval(), data


def prune_and_finetune(
    cfg: SearchConfig, baseline: dict[str, Any], policy: Policy, device: torch.device, epochs: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The pruned, fine-tuned model of one policy and one seed, with its metrics."""
    start = time.time()
    model, data = _baseline_model(cfg, baseline)
    planner = Planner(model, input_size=data.input_size, in_channels=data.in_channels)
    rates = planner.rates(policy)
    structure = analyze(copy.deepcopy(model), data.input_size, data.in_channels)
    batches = [b for _, b in zip(range(4), data.batches("train", torch.device("cpu"), train=True, seed=policy.seed))]
    pruned = prune(structure, rates, policy.criterion, seed=policy.seed, batches=batches)
    cost = count_cost(pruned, structure.example_input)
    pruned = prepare(pruned, device)
    before = evaluate(pruned, data, "val", device)
    finetune = cfg.finetune if epochs is None else cfg.finetune.model_copy(update={"epochs": epochs})
    torch.manual_seed(policy.seed)
    train(pruned, data, finetune, device, seed=policy.seed)
    val = evaluate(pruned, data, "val", device)
    base = planner.cost_model.base
    return pruned, {
        "accuracy": val,
        "test_accuracy": evaluate(pruned, data, "test", device),
        "accuracy_before_finetune": before,
        "acc_drop": baseline["val_accuracy"] - val,
        "flops": cost.flops,
        "params": cost.params,
        "flops_reduction_pct": 100.0 * (1 - cost.flops / base.flops),
        "params_reduction_pct": 100.0 * (1 - cost.params / base.params),
        "rates": [round(float(r), 6) for r in rates],
        "seconds": time.time() - start,
    }


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def run_trial(params: dict[str, Any], cfg: SearchConfig, baseline: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Metrics of one policy, averaged over ``space.repeats`` seeds; status 'ok' or 'failed'."""
    policy = policy_from_params(params, cfg)
    start = time.time()
    runs = []
    try:
        for r in range(cfg.space.repeats):
            runs.append(prune_and_finetune(cfg, baseline, Policy.from_dict({**policy.to_dict(), "seed": policy.seed + r}), device)[1])
    except Diverged as exc:
        return _failed(policy, f"diverged: {exc}", start, device)
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return _failed(policy, "out of memory", start, device)
    metrics = dict(runs[0])
    for key in ACCURACY_FIELDS:
        values = [run[key] for run in runs]
        metrics[key] = statistics.fmean(values)
        metrics[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    if not all(math.isfinite(metrics[k]) for k in ACCURACY_FIELDS):
        return _failed(policy, "non-finite accuracy", start, device)
    metrics.update(status="ok", failure_reason="", seconds=time.time() - start, **_where(device), **_policy_fields(policy))
    return metrics


def _policy_fields(policy: Policy) -> dict[str, Any]:
    return {"gpr": policy.gpr, "pd": policy.label, "slope": policy.slope, "curvature": policy.curvature,
            "criterion": policy.criterion, "seed": policy.seed, "mode": policy.mode}


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
            "accuracy_before_finetune": 0.0, "acc_drop": 100.0, "flops": -1, "params": -1,
            "flops_reduction_pct": 0.0, "params_reduction_pct": 0.0, "rates": [],
            "seconds": time.time() - start, **_where(device), **_policy_fields(policy)}
