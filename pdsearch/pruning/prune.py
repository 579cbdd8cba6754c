"""Real structured pruning: remove the least important channels of every group."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from pdsearch.errors import PdsearchError
from pdsearch.pruning.criteria import NEEDS_GRADIENTS, GroupScorer
from pdsearch.pruning.structure import ModelStructure


def _accumulate_gradients(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    model.train()
    model.zero_grad()
    seen = 0
    for x, y in batches:
        nn.functional.cross_entropy(model(x), y).backward()
        seen += 1
    if not seen:
        raise PdsearchError("the taylor criterion needs data batches to compute gradients")


def prune(
    structure: ModelStructure,
    rates: Sequence[float],
    criterion: str = "l1",
    seed: int = 0,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> nn.Module:
    """Prune ``structure.model`` in place, ``rates[g]`` of group g's channels; return it.

    ``batches`` (inputs, labels) feed the gradient-based criteria.
    """
    if len(rates) != len(structure.groups):
        raise ValueError(f"{len(rates)} rates for {len(structure.groups)} groups")
    model, graph = structure.model, structure.graph
    scorer = GroupScorer(criterion)
    if criterion in NEEDS_GRADIENTS:
        _accumulate_gradients(model, batches or [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for group, rate in zip(structure.groups, rates):
            n_prune = group.channels_to_prune(rate)
            if n_prune == 0:
                continue
            root = model.get_submodule(group.name)
            handler = graph.get_pruner_of_module(root).prune_out_channels
            full = graph.get_pruning_group(root, handler, list(range(group.channels)))
            score = scorer(full).detach().cpu().float()
            per = group.channels // group.channel_groups
            score = score.view(group.channel_groups, per).mean(0)  # same slots in every conv group
            drop = torch.argsort(score)[: n_prune // group.channel_groups]
            idxs = torch.cat([drop + k * per for k in range(group.channel_groups)])
            graph.get_pruning_group(root, handler, sorted(idxs.tolist())).prune()
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        try:
            model(structure.example_input)
        except Exception as exc:
            raise PdsearchError(f"model cannot be pruned structurally: pruned model fails to run ({exc})") from None
    return model
