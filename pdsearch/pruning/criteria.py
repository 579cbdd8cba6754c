"""Filter criteria: which channels of a group to remove, as Torch-Pruning importances."""
from __future__ import annotations

from typing import Callable

import torch
import torch_pruning as tp

from pdsearch.policy.policy import CRITERIA, check_criterion

IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "fpgm": lambda: tp.importance.FPGMImportance(),
    "random": lambda: tp.importance.RandomImportance(),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
}

# Criteria that read gradients: the pruner runs a few labelled batches through the model first.
NEEDS_GRADIENTS = {"taylor"}


assert set(IMPORTANCES) == set(CRITERIA)


class GroupScorer:
    """Scores every channel of a group; groups the criterion cannot score fall back to L1.

    ``bn_scale`` has nothing to read in a group without BatchNorm (a VGG without BN, a
    hidden Linear layer), and Taylor nothing without gradients; magnitude is the
    conventional fallback in both cases.
    """

    def __init__(self, criterion: str) -> None:
        self.importance = IMPORTANCES[check_criterion(criterion)]()
        self.fallback = IMPORTANCES["l1"]()

    def __call__(self, group) -> torch.Tensor:
        score = self.importance(group)
        if score is None or not torch.isfinite(score).all():
            score = self.fallback(group)
        return score
