"""Loss-aware allocation with per-group criteria (LAASP, Ghimire et al. 2023), inside the trial.

Greedy: while the budget is not met, every group tries removing one more slice of its
channels with every criterion of the pool (a group keeps the criterion it was first
pruned with), and the (group, criterion) that raises the loss on a few training batches
least per unit of cost saved is kept. The greedy is lazy: a candidate keeps the score it
had when last measured and only the best is measured again, so a step costs a few forward
passes instead of one per group and criterion. After every ``retrain_every`` points of cost
removed, a few SGD steps let the remaining weights adapt, so later choices see the
network as it will be. The outcome is per-group rates and criteria: the trial prunes
the baseline with them, so a rerun from those two lists reproduces it exactly.

Where the greedy stops changes none of its steps: the allocation at a budget is a prefix
of the path to any larger one. A search measures the path to its largest budget once,
before the first trial (``pdsearch.trial.loss_path``), and every trial reads its prefix.
"""
from __future__ import annotations

import dataclasses
import heapq
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
from pydantic import Field, field_validator

from pdsearch.errors import PdsearchError
from pdsearch.policy.allocators.base import Allocation, Allocator, Needs, Problem, Settings, register
from pdsearch.policy.criteria import check_criterion
from pdsearch.policy.solve import refine

if TYPE_CHECKING:
    from pdsearch.policy.policy import Policy


class LossAwareSettings(Settings):
    from_space = {"pool": "criteria_pool"}
    pool: list[str] = ["l1", "l2", "fpgm", "cosine"]
    """Criteria one of which is picked per channel group (set by space.criteria_pool)."""
    # Sized so an allocation costs a few fine-tune epochs, not dozens (benchmarks/loss_aware.py): LAASP's own
    # finer steps (slice 1/16, 2 loss batches, 10 SGD steps every 5 points) cost 3-5 times as much.
    slice: float = Field(0.125, gt=0, le=0.5)
    """Fraction of a group's channels one greedy step removes."""
    loss_batches: int = Field(1, ge=1)
    """Training batches each candidate's loss is measured on (fixed for the whole path)."""
    retrain_every: float = Field(10.0, gt=0)
    """Points of cost removed between retraining bursts."""
    retrain_steps: int = Field(5, ge=0)
    """SGD steps per retraining burst (0: never retrain)."""

    @field_validator("pool")
    @classmethod
    def _pool(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("pd loss_aware needs a non-empty criteria pool (space.criteria_pool)")
        for name in value:
            check_criterion(name)
        return value


def most_removable(channels: int, channel_groups: int, max_rate: float) -> int:
    per = channels // channel_groups
    return (per - max(1, math.floor(per * (1.0 - max_rate) + 1e-9))) * channel_groups


@register
class LossAware(Allocator):
    name = "loss_aware"
    needs = Needs.PATH
    chooses_criteria = True
    settings = LossAwareSettings

    def rates(self, policy: Policy, problem: Problem) -> Allocation:
        goal = problem.goal(policy)
        path = (problem.paths or {}).get(self.name, {}).get(self.path_key(policy, problem))
        if path is None or not path.reaches(goal.reduction):
            path = self.path(policy, problem, goal.reduction)
        removed, chosen, reached = path.at(goal.reduction, len(problem.channels))
        if reached < goal.reduction - TOLERANCE:
            raise PdsearchError(f"{goal.describe()} is out of reach with layer rates capped at "
                                f"{100 * policy.max_rate:g}%: at most {100 * reached:.2f}%")
        rates = refine(removed / problem.channels, goal, problem.space)
        return Allocation(rates, [c or policy.criterion for c in chosen])

    def path(self, policy: Policy, problem: Problem, until: float,
             report: Callable[[float], None] | None = None) -> GreedyPath:
        """The greedy's steps until ``until`` of the policy's cost is removed (or nothing more can be).

        The steps do not depend on where the greedy stops, so one path to a search's largest
        budget holds the allocation of every smaller one: a prefix. ``report`` gets the
        reduction after each step.
        """
        if problem.probe is None:
            raise PdsearchError("pd loss_aware measures losses on the trained baseline: use it in a search")
        steps: list[Step] = []
        for step in self._greedy(policy, problem):
            steps.append(step)
            if report:
                report(step.reduction)
            if step.reduction >= until - TOLERANCE:
                return GreedyPath(steps, exhausted=False)
        return GreedyPath(steps, exhausted=True)

    def path_key(self, policy: Policy, problem: Problem) -> str:
        settings = self.settings_of(problem)
        return json.dumps({"metric": problem.goal(policy).metric, "max_rate": policy.max_rate,
                           "round_to": policy.round_to, "seed": policy.seed, **settings.model_dump()}, sort_keys=True)

    def read_path(self, data: dict[str, Any]) -> GreedyPath:
        return GreedyPath.from_dict(data)

    def _greedy(self, policy: Policy, problem: Problem) -> Iterator[Step]:
        settings: LossAwareSettings = self.settings_of(problem)
        space, metric = problem.space, problem.goal(policy).metric
        channels, per_group = problem.channels.astype(int), problem.channel_groups.astype(int)
        limit = np.array([most_removable(c, k, policy.max_rate) for c, k in zip(channels, per_group)])
        step = np.maximum(per_group, np.round(settings.slice * channels / per_group).astype(int) * per_group)
        removed = np.zeros(len(channels), dtype=int)
        chosen: list[str | None] = [None] * len(channels)

        def reduction(counts: np.ndarray) -> float:
            return space.reduction(counts / channels, metric)

        probe = problem.probe(settings)
        loss, done = probe.loss(), reduction(removed)
        retrained_at = done

        def measure(g: int, criterion: str) -> tuple[float, int, float] | None:
            """(loss increase per cost saved, count, loss) of removing group g's next slice, or None."""
            count = int(min(removed[g] + step[g], limit[g]))
            if count <= removed[g]:
                return None
            trial = removed.copy()
            trial[g] = count
            saved = reduction(trial) - done
            if saved <= 0:
                return None
            new_loss = probe.loss_with(g, criterion, count)
            return (new_loss - loss) / saved, count, new_loss

        # Lazy greedy: every candidate keeps the score it had when last measured. Only the best is
        # measured again after the network changed; it wins if it is still best, else it goes back
        # with its new score. Retraining changes every score at once: all are measured afresh.
        version, queue = 0, []

        def measure_all() -> None:
            queue.clear()
            for g in range(len(channels)):
                for criterion in [chosen[g]] if chosen[g] else settings.pool:
                    if (found := measure(g, criterion)) is not None:
                        heapq.heappush(queue, (found[0], g, criterion, version))

        measure_all()
        while True:
            best = None
            while queue:
                score, g, criterion, seen = heapq.heappop(queue)
                if chosen[g] not in (None, criterion):
                    continue  # the group took another criterion
                if seen == version and (found := measure(g, criterion)) is not None:
                    best = (g, criterion, *found[1:])  # (a cached loss: no forward pass)
                    break
                if (found := measure(g, criterion)) is not None:
                    heapq.heappush(queue, (found[0], g, criterion, version))
            if best is None:
                return  # nothing more can be removed
            g, criterion, count, loss = best
            probe.commit(g, criterion, count)
            removed[g], chosen[g] = count, criterion
            done = reduction(removed)
            version += 1
            yield Step(g, criterion, count, done)
            if settings.retrain_steps and done - retrained_at >= settings.retrain_every / 100:
                probe.retrain()
                loss, retrained_at = probe.loss(), done
                measure_all()
            elif (found := measure(g, criterion)) is not None:  # the group's next slice, measured lazily too
                heapq.heappush(queue, (found[0], g, criterion, version - 1))


TOLERANCE = 5e-4  # of the cost: a budget met to within it is met


@dataclass(frozen=True)
class Step:
    group: int
    criterion: str
    count: int  # the group's channels removed so far
    reduction: float  # of the cost, after this step


@dataclass
class GreedyPath:
    """The greedy's steps in order; ``exhausted``: it stopped because nothing more could be removed."""

    steps: list[Step]
    exhausted: bool

    def reaches(self, reduction: float) -> bool:
        return self.exhausted or (bool(self.steps) and self.steps[-1].reduction >= reduction - TOLERANCE)

    def at(self, reduction: float, groups: int) -> tuple[np.ndarray, list[str | None], float]:
        """(channels removed per group, criterion per group, cost removed) where the greedy meets ``reduction``."""
        removed, chosen, done = np.zeros(groups, dtype=int), [None] * groups, 0.0
        for step in self.steps:
            if done >= reduction - TOLERANCE:
                break
            removed[step.group], chosen[step.group], done = step.count, step.criterion, step.reduction
        return removed, chosen, done

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [dataclasses.astuple(s) for s in self.steps], "exhausted": self.exhausted}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GreedyPath":
        return cls([Step(int(g), str(c), int(n), float(r)) for g, c, n, r in data["steps"]], bool(data["exhausted"]))

