"""Planning: a policy's per-group rates (and criteria) and its cost, without pruning anything."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from torch import nn

from pdsearch.cost import CostModel
from pdsearch.cost.latency_table import LatencyTable, kept_channels
from pdsearch.cost.layer_shapes import layer_shapes
from pdsearch.errors import PdsearchError
from pdsearch.models import build_model
from pdsearch.policy import Allocation, CostSpace, Needs, Policy, Problem, goal_of
from pdsearch.pruning import ModelStructure, analyze


def _reduction(base: float, pruned: float) -> float:
    return round(100.0 * (1.0 - pruned / base), 4) if base else 0.0


@dataclass
class Plan:
    model: str
    policy: Policy
    layers: list[dict[str, Any]]
    flops: dict[str, float]
    params: dict[str, float]
    gpr: float  # the policy's GPR, or for a budget the homogeneous GPR of the same cost
    criteria: list[str] | None = None  # per group, where the allocator chose them
    allocation_seconds: float = 0.0
    latency: dict[str, float] | None = None  # predicted on the target, where a latency table is given
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rates(self) -> list[float]:
        return [layer["rate"] for layer in self.layers]

    @property
    def flexiprune_list(self) -> list[float]:
        """FlexiPrune's ``list_pruning``: every group's rate in order, then 0 for the classifier."""
        return [*self.rates, 0.0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "gpr": self.gpr,
            "budget": self.policy.budget,
            "budget_metric": self.policy.budget_metric if self.policy.budget is not None else None,
            "pd": self.policy.pd,
            "mode": self.policy.mode,
            "policy": self.policy.to_dict(),
            "layers": self.layers,
            "criteria": self.criteria,
            "flexiprune_list": self.flexiprune_list,
            "flops": self.flops,
            "params": self.params,
            **({"latency_ms": self.latency["pruned"], "baseline_latency_ms": self.latency["base"],
                "latency_reduction_pct": self.latency["reduction_pct"],
                **{f"latency_{k}": self.latency[k] for k in TABLE_TARGET if k in self.latency}} if self.latency else {}),
        }


TABLE_TARGET = ("input_size", "precision", "runtime", "device")  # what a latency prediction is of, said beside it


class Planner:
    """Analyses one model once (structure + base cost), then plans any number of policies."""

    def __init__(
        self,
        model: str | nn.Module,
        num_classes: int = 10,
        input_size: int = 224,
        in_channels: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        latency_table: LatencyTable | str | None = None,
    ) -> None:
        if not isinstance(input_size, int) or input_size <= 0:
            raise PdsearchError(f"input size must be a positive integer, got {input_size!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise PdsearchError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if isinstance(model, str):
            self.model_name = model
            model = build_model(model, num_classes=num_classes, in_channels=in_channels, **(model_kwargs or {}))
        else:
            self.model_name = type(model).__name__
        self.input_size = input_size
        self.structure: ModelStructure = analyze(model, input_size, in_channels)
        self.cost_model = CostModel(self.structure)
        self.latency_ms: Callable[[np.ndarray], float] | None = None  # channels removed per group -> ms
        self.latency_target: dict[str, Any] = {}  # what the table's predictions are of (TABLE_TARGET)
        if latency_table is not None:
            source = f"latency table {str(latency_table)!r}" if isinstance(latency_table, str) else "latency table"
            table = LatencyTable.load(latency_table) if isinstance(latency_table, str) else latency_table
            self.latency_ms = self.latency_predictor(table, source)
            self.latency_target = {k: table.key[k] for k in TABLE_TARGET}

    @classmethod
    def from_info(cls, name: str, info: dict[str, Any], model_kwargs: dict[str, Any] | None = None,
                  latency_table: LatencyTable | str | None = None) -> "Planner":
        """The model's analysis from a run's model.json (input size, channels, classes): no data needed."""
        return cls(name, num_classes=info["num_classes"], input_size=info["input_size"],
                   in_channels=info["in_channels"], model_kwargs=model_kwargs, latency_table=latency_table)

    @property
    def groups(self):
        return self.structure.groups

    def cost_space(self, max_rate: float, round_to: int = 1) -> CostSpace:
        """The cost as a function of rates, channel rounding (and ``round_to``) included."""
        base = self.cost_model.base
        latency, base_latency = None, 0.0
        if self.latency_ms is not None:
            latency = lambda rates: self.latency_ms(self.pruned_channels(rates, round_to))  # noqa: E731
            base_latency = self.latency_ms(np.zeros(len(self.groups)))
        return CostSpace(lambda rates: self.cost(rates, round_to), (float(base.flops), float(base.params)),
                         np.array([g.step(round_to) for g in self.groups]), max_rate, latency, base_latency)

    def problem(self, policy: Policy, **measured: Any) -> Problem:
        """What the policy's allocator reads; ``measured`` adds settings, a profile or a loss probe."""
        return Problem(
            space=self.cost_space(policy.max_rate, policy.round_to),
            positions=np.array([g.position for g in self.groups]),
            kinds=[g.kind for g in self.groups],
            channels=np.array([g.channels for g in self.groups]),
            channel_groups=np.array([g.channel_groups for g in self.groups]),
            **measured,
        )

    def allocate(self, policy: Policy, **measured: Any) -> Allocation:
        """Per-group rates (the fraction of channels really removed) and, where chosen, criteria."""
        problem = self.problem(policy, **measured)
        if policy.budget is not None:
            problem.space.check(problem.goal(policy))
        allocation = policy.allocator.allocate(policy, problem)
        if not policy.allocator.published_rates:
            # The fraction really removed: the solver lands on channel boundaries (0.1250000001
            # of 8 channels removes 2), and a rate a reader re-applies must remove the same channels.
            allocation.rates = np.array([g.channels_to_prune(r, policy.round_to) / g.channels
                                         for g, r in zip(self.groups, allocation.rates)])
        return allocation

    def check(self, policy: Policy, **measured: Any) -> None:
        """Raise PdsearchError if ``policy`` cannot be built; milliseconds, no data needed.

        The budget is checked against what the cap allows; the policy is planned in full when
        what its allocator reads is at hand (the model's shapes always; a profile if given).
        A loss probe is never built here: that allocation runs in the trial.
        """
        space = self.cost_space(policy.max_rate, policy.round_to)
        space.check(goal_of(policy, space))
        needs = policy.allocator.needs
        if needs == Needs.STRUCTURE or (needs == Needs.SENSITIVITY and measured.get("profile") is not None):
            self.plan(policy, **measured)

    def rates(self, policy: Policy, **measured: Any) -> np.ndarray:
        return self.allocate(policy, **measured).rates

    def equivalent_gpr(self, policy: Policy) -> float:
        """The policy's GPR; for a budget, the homogeneous rate (percent) of the same cost (ACRA's uniform rate)."""
        if policy.gpr is not None:
            return float(policy.gpr)
        space = self.cost_space(policy.max_rate, policy.round_to)
        return round(100.0 * space.uniform_rate(goal_of(policy, space)), 4)

    def pruned_channels(self, rates: Sequence[float], round_to: int = 1) -> np.ndarray:
        """Channels each group loses at ``rates``, channel rounding included."""
        return np.array([g.channels_to_prune(r, round_to) for g, r in zip(self.groups, rates)])

    def cost(self, rates: Sequence[float], round_to: int = 1) -> tuple[float, float]:
        """Exact (FLOPs, params) after pruning with ``rates``, channel rounding included."""
        return self.cost_model.predict(self.pruned_channels(rates, round_to))

    def latency_predictor(self, table: LatencyTable, source: str = "latency table") -> Callable[[np.ndarray], float]:
        """Milliseconds on the table's target for channels removed per group; a table of another model is refused."""
        table.check_layers(layer_shapes(self.structure.model, self.structure.example_input), source)
        return lambda pruned: table.predict(kept_channels(self.cost_model, table, pruned))

    def plan(self, policy: Policy, **measured: Any) -> Plan:
        allocation = self.allocate(policy, **measured)
        return self.plan_rates(policy, allocation.rates, allocation.criteria, allocation.seconds)

    def plan_rates(self, policy: Policy, rates: Sequence[float], criteria: list[str] | None = None,
                   seconds: float = 0.0) -> Plan:
        """The plan of rates already allocated (a data-driven trial's, read back from trials.csv)."""
        if len(rates) != len(self.groups):
            raise PdsearchError(f"{len(rates)} rates recorded for a model with {len(self.groups)} channel groups")
        flops, params = self.cost(rates)
        base = self.cost_model.base
        layers = [
            {
                "name": g.name,
                "rate": float(r),  # exact: rounding could move a channel boundary
                "position": round(g.position, 4),
                "channels": g.channels,
                "kept": g.channels - g.channels_to_prune(r),
                **({"criterion": criteria[g.index]} if criteria else {}),
            }
            for g, r in zip(self.groups, rates)
        ]
        latency = None
        if self.latency_ms is not None:
            mine, theirs = self.latency_ms(self.pruned_channels(rates)), self.latency_ms(np.zeros(len(self.groups)))
            latency = {"base": round(theirs, 4), "pruned": round(mine, 4), "reduction_pct": _reduction(theirs, mine),
                       **self.latency_target}
        return Plan(
            model=self.model_name,
            policy=policy,
            layers=layers,
            flops={"base": base.flops, "pruned": round(flops), "reduction_pct": _reduction(base.flops, flops)},
            params={"base": base.params, "pruned": round(params), "reduction_pct": _reduction(base.params, params)},
            gpr=self.equivalent_gpr(policy),
            criteria=criteria,
            allocation_seconds=seconds,
            latency=latency,
        )

    def grid(self, gprs: Iterable[float] | None = None, pds: Iterable[Any] = (1, 2, 3, 4, 5), *,
             flops_reductions: Iterable[float] | None = None, params_reductions: Iterable[float] | None = None,
             **policy_fields: Any) -> pd.DataFrame:
        """FLOPs and params reductions of every GPR (or budget) × PD (rows where a policy is impossible say why)."""
        amounts = grid_amounts(gprs, flops_reductions, params_reductions)
        rows = []
        for amount in amounts:
            for pd_name in pds:
                policy = Policy(pd=pd_name, **amount, **policy_fields)  # bad input raises
                row: dict[str, Any] = {**amount, "pd": policy.label}
                try:
                    p = self.plan(policy)
                    row.update(gpr=p.gpr, flops_reduction_pct=p.flops["reduction_pct"],
                               params_reduction_pct=p.params["reduction_pct"],
                               flops=p.flops["pruned"], params=p.params["pruned"], error="")
                except PdsearchError as exc:  # an impossible policy, e.g. a rate reaching 100%
                    row["error"] = str(exc)
                rows.append(row)
        return pd.DataFrame(rows)


def grid_amounts(gprs, flops_reductions, params_reductions) -> list[dict[str, Any]]:
    """Policy fields for each GPR or budget of a grid (exactly one kind)."""
    given = [x for x in (gprs, flops_reductions, params_reductions) if x is not None]
    if len(given) > 1:
        raise PdsearchError("give GPRs or FLOPs reductions or params reductions for a grid, not several")
    if flops_reductions is not None:
        return [{"budget": b, "budget_metric": "flops"} for b in flops_reductions]
    if params_reductions is not None:
        return [{"budget": b, "budget_metric": "params"} for b in params_reductions]
    return [{"gpr": g} for g in (gprs if gprs is not None else range(10, 100, 10))]


def amount_fields(gpr: float | None, flops_reduction: float | None = None, params_reduction: float | None = None,
                  latency_reduction: float | None = None) -> dict[str, Any]:
    budgets = {metric: value for metric, value in
               (("flops", flops_reduction), ("params", params_reduction), ("latency", latency_reduction))
               if value is not None}
    if len(budgets) > 1:
        raise PdsearchError("give one budget (a FLOPs, params or latency reduction), not several")
    if not budgets:
        return {"gpr": gpr}
    if gpr is not None:
        raise PdsearchError("give a GPR or a budget (FLOPs, params or latency reduction), not both")
    (metric, budget), = budgets.items()
    return {"budget": budget, "budget_metric": metric}


def plan(
    model: str | nn.Module,
    gpr: float | None = None,
    pd: Any = "PD1",
    *,
    flops_reduction: float | None = None,
    params_reduction: float | None = None,
    latency_reduction: float | None = None,
    latency_table: str | LatencyTable | None = None,
    mode: str = "calibrated",
    criterion: str = "l1",
    num_classes: int = 10,
    input_size: int = 224,
    **policy_fields: Any,
) -> Plan:
    """Per-layer rates and cost of one policy on ``model`` (a registry name or a module).

    How much: ``gpr`` (percent), or a budget, ``flops_reduction`` / ``params_reduction`` /
    ``latency_reduction`` (percent; latency needs ``latency_table``, which also adds the
    predicted latency to any plan).
    """
    amount = amount_fields(gpr, flops_reduction, params_reduction, latency_reduction)
    policy = Policy(pd=pd, mode=mode, criterion=criterion, **amount, **policy_fields)
    return Planner(model, num_classes=num_classes, input_size=input_size, latency_table=latency_table).plan(policy)


def plan_grid(
    model: str | nn.Module,
    gprs: Iterable[float] | None = None,
    pds: Iterable[Any] = (1, 2, 3, 4, 5),
    *,
    flops_reductions: Iterable[float] | None = None,
    params_reductions: Iterable[float] | None = None,
    num_classes: int = 10,
    input_size: int = 224,
    **policy_fields: Any,
) -> pd.DataFrame:
    """FLOPs/params reductions of every GPR (or budget) × PD, the FlexiPrune trade-off table."""
    return Planner(model, num_classes=num_classes, input_size=input_size).grid(
        gprs, pds, flops_reductions=flops_reductions, params_reductions=params_reductions, **policy_fields)
