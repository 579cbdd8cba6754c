"""Multi-objective asynchronous successive halving (MO-ASHA) as a Ray Tune scheduler.

Only accuracy evolves with fine-tuning; FLOPs and params are fixed the moment a trial
prunes. At each rung (fine-tune epochs min_epochs·eta^k below the full budget; a rung at
0 epochs reads the BatchNorm-recalibrated screening accuracy) a trial goes on only if it
ranks in the top 1/eta of the trials recorded at that rung so far, asynchronously, as
ASHA does. Ranking: constrained non-dominated sorting on the search's objectives
(infeasible trials last, by total violation, as Optuna's constrained dominance does),
ties within a front broken by crowding distance, as NSGA-II and Syne Tune's MOASHA do.
Only constraints on what pruning fixes (FLOPs, params, latency) can make a trial
infeasible at a rung: an accuracy constraint judged on a half-fine-tuned accuracy would
stop exactly the heavily pruned policies that need the epochs most.

Ray Tune's own schedulers track one metric; Optuna's pruners refuse multi-objective
studies. This is the piece neither has. Registered in pdsearch.catalog.schedulers.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
from optuna.study._multi_objective import _fast_non_domination_rank
from ray.tune.schedulers import TrialScheduler

from pdsearch.catalog.objectives import directions, metrics
from pdsearch.config import SearchConfig
from pdsearch.searching.fifo import NewestFirstFIFO
from pdsearch.trial.trial import RUNNING

Record = tuple[np.ndarray, float]  # losses (lower is better), total constraint violation (> 0: infeasible)


def rungs(min_epochs: int, eta: float, epochs: int) -> list[int]:
    """Milestones below the full budget: min_epochs·eta^k (0, then 1, eta, eta²… when min_epochs is 0)."""
    found, k = ([0], 1) if min_epochs == 0 else ([], min_epochs)
    while k < epochs:
        found.append(int(k))
        k = math.ceil(k * eta)
    return [r for r in found if r < epochs]


def _crowding(losses: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within one front (larger: more isolated, preferred)."""
    n, distance = len(losses), np.zeros(len(losses))
    if n <= 2:
        return np.full(n, np.inf)
    for column in losses.T:
        order = np.argsort(column)
        span = column[order[-1]] - column[order[0]]
        distance[order[[0, -1]]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return distance


def ranking(records: Mapping[str, Record]) -> list[str]:
    """Trial ids, best first: feasible fronts in order, then infeasible by violation; crowding breaks ties."""
    ids = list(records)
    losses = np.array([records[i][0] for i in ids], dtype=float)
    penalty = np.array([records[i][1] for i in ids], dtype=float)
    rank = _fast_non_domination_rank(losses, penalty=penalty)
    crowding = np.zeros(len(ids))
    for r in np.unique(rank):
        members = np.flatnonzero(rank == r)
        crowding[members] = _crowding(losses[members])
    order = sorted(range(len(ids)), key=lambda i: (rank[i], -crowding[i], ids[i]))
    return [ids[i] for i in order]


def continues(records: Mapping[str, Record], trial_id: str, eta: float) -> bool:
    """ASHA's rule on a multi-objective ranking: in the top ceil(n/eta) of the n recorded at the rung."""
    keep = max(1, math.ceil(len(records) / eta))
    return trial_id in ranking(records)[:keep]


class MultiObjectiveASHA(NewestFirstFIFO):
    """Stops trials at rungs by multi-objective rank; results carry ``epoch`` (0 = screening)."""

    def __init__(self, objectives: list[str], modes: list[str], milestones: list[int], eta: float,
                 violation: Callable[[Mapping[str, Any]], float]) -> None:
        super().__init__()
        self.objectives, self.signs = objectives, [-1.0 if m == "max" else 1.0 for m in modes]
        self.milestones, self.eta, self.violation = set(milestones), eta, violation
        self.records: dict[int, dict[str, Record]] = {m: {} for m in milestones}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get("epoch")
        if result.get("status") != RUNNING or epoch not in self.milestones:
            return TrialScheduler.CONTINUE  # a final result, or an epoch between rungs
        losses = np.array([sign * float(result[o]) for sign, o in zip(self.signs, self.objectives)])
        at_rung = self.records[epoch]
        at_rung[trial.trial_id] = (losses, self.violation(result))
        return TrialScheduler.CONTINUE if continues(at_rung, trial.trial_id, self.eta) else TrialScheduler.STOP

    def debug_string(self) -> str:
        return "MO-ASHA: " + ", ".join(f"rung {m}: {len(self.records[m])}" for m in sorted(self.milestones))


def mo_asha(cfg: SearchConfig) -> MultiObjectiveASHA:
    constraints = cfg.search.constraints
    return MultiObjectiveASHA(
        metrics(cfg.search.objectives), directions(cfg.search.objectives),
        rungs(cfg.search.fidelity.min_epochs, cfg.search.fidelity.eta, cfg.finetune.epochs), cfg.search.fidelity.eta,
        # accuracy constraints judge the final accuracy: at a rung, only cost constraints can rank a trial last
        violation=lambda result: sum(max(0.0, v) for v in constraints.violations(result, fixed_only=True).values()),
    )
