"""Loss-aware allocation's greedy paths for a run: measured once, before the first trial, cached beside the baseline.

A loss-aware allocation at a budget is the prefix of the greedy's path to any larger
budget (``policy.allocators.loss_aware``). So the search measures, as a Ray task with a
trial's resources, one path per combination of what the steps depend on (seed,
``round_to``) up to the space's largest budget, and every trial reads its prefix instead of
paying the greedy again. ``resume`` reuses the cached file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from pdsearch.config import SearchConfig, digest
from pdsearch.files import atomic_path
from pdsearch.policy import Policy
from pdsearch.policy.allocators.loss_aware import GreedyPath, LossAware, path_key
from pdsearch.space import SearchSpace
from pdsearch.trial.baseline import Baseline
from pdsearch.trial.loss_probe import loss_probe_factory
from pdsearch.trial.training import default_device, use_threads
from pdsearch.trial.trial import trial_context

Paths = dict[str, GreedyPath]


def _allocator(cfg: SearchConfig) -> str | None:
    return next((name for name in cfg.space.allocators_used() if name == LossAware.name), None)


def needs_paths(cfg: SearchConfig) -> bool:
    return _allocator(cfg) is not None


def largest_policies(cfg: SearchConfig) -> list[Policy]:
    """The space's loss-aware policies at its largest budget (or GPR), one per seed and round_to."""
    kind, amount = cfg.space.amount
    return [SearchSpace(cfg).policy({kind: amount.high, "pd": LossAware.name, "seed": seed, "round_to": round_to})
            for seed in cfg.space.seeds for round_to in cfg.space.round_to]


def _path(cfg: SearchConfig, run_dir: Path) -> Path:
    key = digest({"baseline": cfg.baseline_key(), "lr": cfg.finetune.lr,
                  "settings": cfg.space.settings_for(LossAware.name).model_dump(),
                  "policies": [str(p) for p in largest_policies(cfg)], "latency": cfg.latency.table})
    return Path(run_dir) / "baseline" / f"loss-aware-paths-{key}.json"


def cached_paths(cfg: SearchConfig, run_dir: Path) -> Paths | None:
    path = _path(cfg, run_dir)
    if not path.is_file():
        return None
    return {key: GreedyPath.from_dict(value) for key, value in json.loads(path.read_text()).items()}


def save_paths(cfg: SearchConfig, paths: Paths, run_dir: Path) -> Path:
    path = _path(cfg, run_dir)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({key: value.to_dict() for key, value in paths.items()}))
    return path


def compute_paths(cfg: SearchConfig, baseline: Baseline, latency_table: dict[str, Any] | None = None,
                  device: torch.device | None = None, report: Callable[[dict[str, Any]], None] | None = None) -> Paths:
    """Every path the space's trials read (run as a Ray task by the search).

    ``report`` receives the cost removed so far, in percent of the largest goal
    (``{stage, unit, done, total}``).
    """
    device = device or default_device()
    use_threads(cfg)
    ctx = trial_context(cfg, baseline, latency_table)
    allocator, settings = LossAware(), cfg.space.settings()
    paths: Paths = {}
    policies = largest_policies(cfg)
    for i, policy in enumerate(policies):
        probe = loss_probe_factory(ctx.model, ctx.data, cfg.finetune.lr, device, seed=policy.seed)
        problem = ctx.planner.problem(policy, settings=settings, probe=probe)
        goal = problem.goal(policy)
        stage = "loss-aware path" + (f" {i + 1}/{len(policies)}" if len(policies) > 1 else "")
        unit = f"percent of {goal.metric} removed"
        total = round(100 * goal.reduction)
        on_step = (lambda done: report(  # noqa: E731
            {"stage": stage, "unit": unit, "done": min(round(100 * done), total), "total": total})) if report else None
        if on_step:
            on_step(0.0)
        paths[path_key(policy, problem)] = allocator.path(policy, problem, goal.reduction, on_step)
        if report:
            report({"stage": stage, "unit": unit, "done": total, "total": total})
    return paths
