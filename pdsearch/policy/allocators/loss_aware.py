"""Loss-aware allocation with per-group criteria (LAASP, Ghimire et al. 2023), inside the trial.

Greedy: while the budget is not met, every group tries removing one more slice of its
channels with every criterion of the pool (a group keeps the criterion it was first
pruned with), and the (group, criterion) that raises the loss on a few training batches
least per unit of cost saved is kept. After every ``retrain_every`` points of cost
removed, a few SGD steps let the remaining weights adapt, so later choices see the
network as it will be. The outcome is per-group rates and criteria: the trial prunes
the baseline with them, so a rerun from those two lists reproduces it exactly.
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field, field_validator

from pdsearch.errors import PdsearchError
from pdsearch.policy.allocators.base import Allocation, Allocator, Problem, Settings, register
from pdsearch.policy.budget import refine
from pdsearch.policy.policy import Policy, check_criterion


class LossAwareSettings(Settings):
    from_space = {"pool": "criteria_pool"}
    pool: list[str] = ["l1", "l2", "fpgm", "cosine"]
    slice: float = Field(0.0625, gt=0, le=0.5)  # fraction of a group's channels one step removes
    loss_batches: int = Field(2, ge=1)  # training batches each candidate's loss is measured on
    retrain_every: float = Field(5.0, gt=0)  # points of cost removed between retraining bursts
    retrain_steps: int = Field(10, ge=0)  # SGD steps per burst (0: never retrain)

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
    needs = "training"
    settings = LossAwareSettings

    def rates(self, policy: Policy, problem: Problem) -> Allocation:
        if problem.probe is None:
            raise PdsearchError("pd loss_aware measures losses on the trained baseline: use it in a search")
        settings: LossAwareSettings = self.settings_of(problem)
        space, goal = problem.space, problem.goal(policy)
        channels, per_group = problem.channels.astype(int), problem.channel_groups.astype(int)
        limit = np.array([most_removable(c, k, policy.max_rate) for c, k in zip(channels, per_group)])
        step = np.maximum(per_group, np.round(settings.slice * channels / per_group).astype(int) * per_group)
        removed = np.zeros(len(channels), dtype=int)
        chosen: list[str | None] = [None] * len(channels)

        def reduction(counts: np.ndarray) -> float:
            return space.reduction(counts / channels, goal.metric)

        probe = problem.probe(settings)
        loss, done = probe.loss(), reduction(removed)
        retrained_at = done
        while done < goal.reduction - 5e-4:
            best = None  # (loss increase per cost saved, group, criterion, count, loss)
            for g in range(len(channels)):
                count = min(removed[g] + step[g], limit[g])
                if count <= removed[g]:
                    continue
                trial = removed.copy()
                trial[g] = count
                saved = reduction(trial) - done
                if saved <= 0:
                    continue
                for criterion in [chosen[g]] if chosen[g] else settings.pool:
                    new_loss = probe.loss_with(g, criterion, int(count))
                    score = (new_loss - loss) / saved
                    if best is None or score < best[0]:
                        best = (score, g, criterion, int(count), new_loss)
            if best is None:
                raise PdsearchError(f"{goal.describe()} is out of reach with layer rates capped at "
                                    f"{100 * policy.max_rate:g}%: at most {100 * done:.2f}%")
            _, g, criterion, count, loss = best
            probe.commit(g, criterion, count)
            removed[g], chosen[g] = count, criterion
            done = reduction(removed)
            if settings.retrain_steps and done - retrained_at >= settings.retrain_every / 100:
                probe.retrain()
                loss, retrained_at = probe.loss(), done
        rates = refine(removed / channels, goal, space)
        return Allocation(rates, [c or policy.criterion for c in chosen])
