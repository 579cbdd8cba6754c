"""Planning: a policy's per-layer rates and its cost, without pruning anything."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from torch import nn

from pdsearch.cost import CostModel
from pdsearch.errors import PdsearchError
from pdsearch.models import build_model
from pdsearch.policy import Policy, architecture, calibrated_rates, flexiprune_rates
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
            "gpr": self.policy.gpr,
            "pd": self.policy.pd,
            "mode": self.policy.mode,
            "policy": self.policy.to_dict(),
            "layers": self.layers,
            "flexiprune_list": self.flexiprune_list,
            "flops": self.flops,
            "params": self.params,
        }


class Planner:
    """Analyses one model once (structure + base cost), then plans any number of policies."""

    def __init__(
        self,
        model: str | nn.Module,
        num_classes: int = 10,
        input_size: int = 224,
        in_channels: int = 3,
        model_kwargs: dict[str, Any] | None = None,
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

    @property
    def groups(self):
        return self.structure.groups

    def rates(self, policy: Policy) -> np.ndarray:
        if policy.mode == "flexiprune":
            arch = architecture([g.kind for g in self.groups])
            return np.array(flexiprune_rates(arch, policy.pd, policy.gpr))
        positions = np.array([g.position for g in self.groups])
        solved = calibrated_rates(
            positions, policy.gpr / 100.0, policy.slope, policy.curvature,
            self.cost, policy.target, policy.max_rate,
            steps=np.array([g.channel_groups / g.channels for g in self.groups]),
        )
        # The fraction really removed: the solver lands on channel boundaries (0.1250000001
        # of 8 channels removes 2), and a rate a reader re-applies must remove the same channels.
        return np.array([g.channels_to_prune(r) / g.channels for g, r in zip(self.groups, solved)])

    def cost(self, rates: Sequence[float]) -> tuple[float, float]:
        """Exact (FLOPs, params) after pruning with ``rates``, channel rounding included."""
        return self.cost_model.predict(np.array([g.channels_to_prune(r) for g, r in zip(self.groups, rates)]))

    def plan(self, policy: Policy) -> Plan:
        rates = self.rates(policy)
        flops, params = self.cost(rates)
        base = self.cost_model.base
        layers = [
            {
                "name": g.name,
                "rate": float(r),  # exact: rounding could move a channel boundary
                "position": round(g.position, 4),
                "channels": g.channels,
                "kept": g.channels - g.channels_to_prune(r),
            }
            for g, r in zip(self.groups, rates)
        ]
        return Plan(
            model=self.model_name,
            policy=policy,
            layers=layers,
            flops={"base": base.flops, "pruned": round(flops), "reduction_pct": _reduction(base.flops, flops)},
            params={"base": base.params, "pruned": round(params), "reduction_pct": _reduction(base.params, params)},
        )

    def grid(self, gprs: Iterable[float], pds: Iterable[Any], **policy_fields: Any) -> pd.DataFrame:
        """FLOPs and params reductions of every GPR × PD (rows where a policy is impossible say why)."""
        rows = []
        for gpr in gprs:
            for pd_name in pds:
                policy = Policy(gpr=gpr, pd=pd_name, **policy_fields)  # bad input raises
                row: dict[str, Any] = {"gpr": gpr, "pd": policy.pd}
                try:
                    p = self.plan(policy)
                    row.update(flops_reduction_pct=p.flops["reduction_pct"], params_reduction_pct=p.params["reduction_pct"],
                               flops=p.flops["pruned"], params=p.params["pruned"], error="")
                except PdsearchError as exc:  # an impossible policy, e.g. a rate reaching 100%
                    row["error"] = str(exc)
                rows.append(row)
        return pd.DataFrame(rows)


def plan(
    model: str | nn.Module,
    gpr: float,
    pd: Any = "PD1",
    *,
    mode: str = "calibrated",
    criterion: str = "l1",
    num_classes: int = 10,
    input_size: int = 224,
    **policy_fields: Any,
) -> Plan:
    """Per-layer rates and cost of one policy on ``model`` (a registry name or a module)."""
    policy = Policy(gpr=gpr, pd=pd, mode=mode, criterion=criterion, **policy_fields)
    return Planner(model, num_classes=num_classes, input_size=input_size).plan(policy)


def plan_grid(
    model: str | nn.Module,
    gprs: Iterable[float] = range(10, 100, 10),
    pds: Iterable[Any] = (1, 2, 3, 4, 5),
    *,
    num_classes: int = 10,
    input_size: int = 224,
    **policy_fields: Any,
) -> pd.DataFrame:
    """FLOPs/params reductions of every GPR × PD, the FlexiPrune trade-off table."""
    return Planner(model, num_classes=num_classes, input_size=input_size).grid(gprs, pds, **policy_fields)
