"""The search space: sampler parameters ↔ Policy ↔ a trials.csv row, in one place.

Parameters: ``gpr`` or ``budget`` (how much), ``pd`` or ``slope``/``curvature`` (how it is
spread), ``criterion`` and ``seed`` where the space offers several, and each allocator's
own options (sensitivity's ``blend``), asked only when that allocator is drawn. The
space is define-by-run, so an option absent from a policy never splits identical
policies into different keys.
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Mapping

import optuna

from pdsearch.catalog.objectives import given
from pdsearch.catalog.samplers import SAMPLERS
from pdsearch.errors import PdsearchError
from pdsearch.policy import ALLOCATORS, PD_SHAPES, Policy
from pdsearch.policy.allocators import allocator_for
from pdsearch.policy.policy import MIXED_CRITERIA
from pdsearch.ranges import Range

if TYPE_CHECKING:
    from pdsearch.config import SearchConfig

POLICY_COLUMNS = ["trial_id", "status", "gpr", "budget", "budget_metric", "pd", "criterion", "criteria", "slope",
                  "curvature", "seed", "mode", "distill", "round_to", "precision"]


def _distribution(r: Range) -> optuna.distributions.BaseDistribution:
    if r.values_ is not None:
        return optuna.distributions.CategoricalDistribution(r.values())
    return optuna.distributions.FloatDistribution(r.low, r.high, step=r.step)


class SearchSpace:
    """One config's space: a define-by-run function for Optuna (picklable for Tune's checkpoints)."""

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg
        s = cfg.space
        amount, amount_range = s.amount
        self.fixed: dict[str, optuna.distributions.BaseDistribution] = {amount: _distribution(amount_range)}
        self.grid: dict[str, list] = {amount: amount_range.values()}
        if s.pd is not None:
            self.fixed["pd"] = optuna.distributions.CategoricalDistribution(s.pd)
            self.grid["pd"] = list(s.pd)
        else:
            for name in ("slope", "curvature"):
                r = getattr(s.shape, name)
                self.fixed[name] = _distribution(r)
                self.grid[name] = r.values()
        for name, values in (("criterion", s.criteria), ("seed", s.seeds), ("distill", s.distill or []),
                             ("round_to", s.round_to), ("precision", s.precision)):
            if len(values) > 1:
                self.fixed[name] = optuna.distributions.CategoricalDistribution(values)
                self.grid[name] = list(values)
        # Options are asked only when their allocator is drawn; the grid holds them at their low end.
        self.options = {name: settings.searched() for name, settings in s.settings().items()}

    @property
    def exhaustive(self) -> bool:
        return SAMPLERS[self.cfg.search.sampler].exhaustive

    def sampler(self) -> optuna.samplers.BaseSampler:
        if self.exhaustive:
            missing = [k for k, v in self.grid.items() if not v]
            if missing:
                raise PdsearchError(f"search.sampler {self.cfg.search.sampler} needs a step for {', '.join(missing)} "
                                    "(e.g. space.gpr.step)")
        return SAMPLERS[self.cfg.search.sampler].build(self.cfg, self.grid)

    def size(self) -> int:
        """Trials the search runs: num_trials, or every point of the grid for an exhaustive sampler."""
        if not self.exhaustive:
            return self.cfg.search.num_trials
        return math.prod(len(v) for v in self.grid.values())

    def __call__(self, trial: optuna.trial.BaseTrial) -> None:
        """Optuna's define-by-run: the fixed parameters, then the drawn allocator's options."""
        params = {name: _suggest(trial, name, dist) for name, dist in self.fixed.items()}
        if self.exhaustive:
            return
        for name, r in self.options.get(self._allocator(params), {}).items():
            _suggest(trial, name, _distribution(r))

    def _allocator(self, params: Mapping[str, Any]) -> str:
        return allocator_for(params.get("pd"), self.cfg.space.mode).name

    def first(self) -> dict[str, Any]:
        """One valid parameter set (the preflight plans it)."""
        return {name: (d.choices[0] if hasattr(d, "choices") else d.high) for name, d in self.fixed.items()}

    def distill_weight(self, params: Mapping[str, Any]) -> float:
        """The distillation weight a trial fine-tunes with: drawn, the space's one value, or finetune.distill's."""
        if "distill" in params:
            return float(params["distill"])
        return float(self.cfg.space.distill[0]) if self.cfg.space.distill else self.cfg.finetune.distill.weight

    def policy(self, params: Mapping[str, Any]) -> Policy:
        """The Policy a sampler's parameters describe."""
        s = self.cfg.space
        if "budget" in params:
            amount = {"budget": float(params["budget"]), "budget_metric": s.budget.metric}
        else:
            amount = {"gpr": float(params["gpr"])}
        if "pd" in params:
            shape = {"pd": params["pd"]}
        else:
            shape = {"pd": None, "slope": float(params["slope"]), "curvature": float(params["curvature"])}
        options = {name: float(params.get(name, r.low)) for name, r in self.options.get(self._allocator(params), {}).items()}
        return Policy(criterion=params.get("criterion", s.criteria[0]), mode=s.mode, target=s.target,
                      max_rate=s.max_rate, round_to=int(params.get("round_to", s.round_to[0])),
                      seed=int(params.get("seed", s.seeds[0])), precision=str(params.get("precision", s.precision[0])),
                      options=options, **amount, **shape)

    def policy_of_row(self, row: Mapping[str, Any]) -> Policy:
        """The Policy of a trials.csv row (or a study trial's metrics)."""
        params: dict[str, Any] = {}  # a trial that raised has its sampler parameters only
        if given(row.get("criterion")) and row["criterion"] != MIXED_CRITERIA:  # (per group: in "criteria")
            params["criterion"] = row["criterion"]
        if given(row.get("seed")):
            params["seed"] = int(row["seed"])
        if given(row.get("round_to")):
            params["round_to"] = int(row["round_to"])
        if given(row.get("precision")):
            params["precision"] = str(row["precision"])
        if given(row.get("budget")):
            params["budget"] = float(row["budget"])
        else:
            params["gpr"] = float(row["gpr"])
        if row["pd"] in PD_SHAPES or row["pd"] in ALLOCATORS:
            params["pd"] = row["pd"]
        else:
            params.update(slope=float(row["slope"]), curvature=float(row["curvature"]))
        for name in self.options.get(self._allocator(params), {}):
            if given(row.get(name)):
                params[name] = float(row[name])
        return self.policy(params)


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step)


def policy_fields(policy: Policy, gpr: float | None = None, criteria: list[str] | None = None) -> dict[str, Any]:
    """A policy as trials.csv columns; ``gpr`` is the solved equivalent of a budget."""
    return {
        "gpr": policy.gpr if policy.gpr is not None else gpr,
        "budget": policy.budget if policy.budget is not None else "",
        "budget_metric": policy.budget_metric if policy.budget is not None else "",
        "pd": policy.label, "slope": policy.slope, "curvature": policy.curvature,
        "criterion": policy.criterion_label, "criteria": json.dumps(criteria) if criteria else "",
        "seed": policy.seed, "mode": policy.mode, "round_to": policy.round_to, "precision": policy.precision,
        **policy.options,
    }
