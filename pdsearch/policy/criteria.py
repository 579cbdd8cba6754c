"""Filter criteria: the registry ``criterion`` and ``criteria_pool`` name (torch-free).

Each entry names a Torch-Pruning ``Importance`` by import path, so the config and the
policy validate a criterion without torch; pdsearch.pruning.importance builds it when a
model is pruned. Adding a criterion is one entry here (and its Importance class, if
Torch-Pruning lacks it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pdsearch.errors import PdsearchError
from pdsearch.registry import unknown


@dataclass(frozen=True)
class Criterion:
    importance: str  # import path of a torch_pruning.importance.Importance (class or factory)
    kwargs: dict[str, Any] = field(default_factory=dict)
    needs_gradients: bool = False  # the pruner runs a few labelled batches through the model first


_TP = "torch_pruning:importance"
CRITERIA: dict[str, Criterion] = {
    "l1": Criterion(f"{_TP}.GroupMagnitudeImportance", {"p": 1}),
    "l2": Criterion(f"{_TP}.GroupMagnitudeImportance", {"p": 2}),
    "fpgm": Criterion(f"{_TP}.FPGMImportance"),
    "cosine": Criterion("pdsearch.pruning.importance:CosineSimilarityImportance"),
    "random": Criterion(f"{_TP}.RandomImportance"),
    "taylor": Criterion(f"{_TP}.GroupTaylorImportance", needs_gradients=True),
    "bn_scale": Criterion(f"{_TP}.BNScaleImportance"),
}


def check_criterion(name: str) -> str:
    if name not in CRITERIA:
        raise PdsearchError(unknown("criterion", name, CRITERIA))
    return name
