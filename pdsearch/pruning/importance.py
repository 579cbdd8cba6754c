"""Filter criteria as Torch-Pruning importances: which channels of a group to remove.

The names live in pdsearch.policy.criteria (torch-free); here they become importances.
"""
from __future__ import annotations

import torch
import torch_pruning as tp

from pdsearch.policy.criteria import CRITERIA, check_criterion
from pdsearch.registry import resolve


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


def importance(criterion: str) -> tp.importance.Importance:
    entry = CRITERIA[check_criterion(criterion)]
    return resolve(entry.importance)(**entry.kwargs)


def needs_gradients(criterion: str) -> bool:
    return CRITERIA[check_criterion(criterion)].needs_gradients


class GroupScorer:
    """Scores every channel of a group; groups the criterion cannot score fall back to L1.

    ``bn_scale`` has nothing to read in a group without BatchNorm (a VGG without BN, a
    hidden Linear layer), and Taylor nothing without gradients; magnitude is the
    conventional fallback in both cases.
    """

    def __init__(self, criterion: str) -> None:
        self.importance = importance(criterion)
        self.fallback = importance("l1")

    def __call__(self, group) -> torch.Tensor:
        score = self.importance(group)
        if score is None or not torch.isfinite(score).all():
            score = self.fallback(group)
        return score
