"""Filter criteria: which channels of a group to remove, as Torch-Pruning importances."""
from __future__ import annotations

from typing import Callable

import torch
import torch_pruning as tp

from pdsearch.policy.policy import CRITERIA, check_criterion

class CosineSimilarityImportance(tp.importance.Importance):
    """Redundancy: a filter nearly parallel to another filter of its layer matters least.

    Importance is 1 − the largest cosine similarity to any other filter of the group's
    root layer (one of LAASP's criteria).
    """

    def __call__(self, group) -> torch.Tensor:
        root = group[0].dep.target.module
        idxs = [int(i) for i in group[0].idxs]
        weight = root.weight.detach()[idxs].flatten(1).float()
        unit = torch.nn.functional.normalize(weight, dim=1)
        similarity = unit @ unit.T
        similarity.fill_diagonal_(-1.0)
        return 1.0 - similarity.max(dim=1).values


IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "fpgm": lambda: tp.importance.FPGMImportance(),
    "cosine": CosineSimilarityImportance,
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
