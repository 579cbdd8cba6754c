"""The paths of allocators that need one (``Needs.PATH``: loss-aware's greedy), measured once per run, cached
beside the baseline.

A loss-aware allocation at a budget is the prefix of the greedy's path to any larger
budget (``policy.allocators.loss_aware``). So the search measures, as a Ray task with a
trial's resources, one path per combination of what the steps depend on (seed,
``round_to``) up to the space's largest budget, and every trial reads its prefix instead of
paying the greedy again. ``resume`` reuses the cached file. Any allocator that declares
``Needs.PATH`` gets the same: this module asks the registry, never a name.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from pdsearch.config import SearchConfig, digest
from pdsearch.files import atomic_path
from pdsearch.policy import ALLOCATORS, Policy
from pdsearch.policy.allocators import Allocator, Needs
from pdsearch.space import SearchSpace
from pdsearch.trial.baseline import Baseline
from pdsearch.trial.loss_probe import loss_probe_factory
from pdsearch.trial.training import default_device, use_threads
from pdsearch.trial.trial import trial_context

Paths = dict[str, dict[str, Any]]  # allocator -> its path_key -> path


def path_allocators(cfg: SearchConfig) -> list[Allocator]:
    """The space's allocators that read a path measured once per run."""
    return [ALLOCATORS[name] for name in cfg.space.allocators_used() if ALLOCATORS[name].needs == Needs.PATH]


def needs_paths(cfg: SearchConfig) -> bool:
    return bool(path_allocators(cfg))


def largest_policies(cfg: SearchConfig, allocator: Allocator) -> list[Policy]:
    """The space's policies of ``allocator`` at its largest budget (or GPR), one per seed and round_to."""
    kind, amount = cfg.space.amount
    return [SearchSpace(cfg).policy({kind: amount.high, "pd": allocator.name, "seed": seed, "round_to": round_to})
            for seed in cfg.space.seeds for round_to in cfg.space.round_to]


def _path(cfg: SearchConfig, run_dir: Path) -> Path:
    key = digest({"baseline": cfg.baseline_key(), "lr": cfg.finetune.lr, "latency": cfg.latency.table, "by": {
        a.name: {"settings": cfg.space.settings_for(a.name).model_dump(),
                 "policies": [str(p) for p in largest_policies(cfg, a)]} for a in path_allocators(cfg)}})
    return Path(run_dir) / "baseline" / f"allocation-paths-{key}.json"


def cached_paths(cfg: SearchConfig, run_dir: Path) -> Paths | None:
    path = _path(cfg, run_dir)
    if not path.is_file():
        return None
    return {name: {key: ALLOCATORS[name].read_path(value) for key, value in paths.items()}
            for name, paths in json.loads(path.read_text()).items()}


def save_paths(cfg: SearchConfig, paths: Paths, run_dir: Path) -> Path:
    path = _path(cfg, run_dir)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({name: {key: value.to_dict() for key, value in by_key.items()}
                                   for name, by_key in paths.items()}))
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
    settings, paths = cfg.space.settings(), {}
    measured = [(a, p) for a in path_allocators(cfg) for p in largest_policies(cfg, a)]
    for i, (allocator, policy) in enumerate(measured):
        probe = loss_probe_factory(ctx.model, ctx.data, cfg.finetune.lr, device, seed=policy.seed)
        problem = ctx.planner.problem(policy, settings=settings, probe=probe)
        goal = problem.goal(policy)
        stage = f"{allocator.name.replace('_', '-')} path" + (f" {i + 1}/{len(measured)}" if len(measured) > 1 else "")
        unit = f"percent of {goal.metric} removed"
        total = round(100 * goal.reduction)
        on_step = (lambda done: report(  # noqa: E731
            {"stage": stage, "unit": unit, "done": min(round(100 * done), total), "total": total})) if report else None
        if on_step:
            on_step(0.0)
        key = allocator.path_key(policy, problem)
        paths.setdefault(allocator.name, {})[key] = allocator.path(policy, problem, goal.reduction, on_step)
        if report:
            report({"stage": stage, "unit": unit, "done": total, "total": total})
    return paths
