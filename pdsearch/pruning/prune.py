"""Real structured pruning: remove the least important channels of every group."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from pdsearch.errors import PdsearchError
from pdsearch.pruning.criteria import NEEDS_GRADIENTS, GroupScorer
from pdsearch.pruning.structure import ChannelGroup, ModelStructure


def accumulate_gradients(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    model.train()
    model.zero_grad()
    seen = 0
    for x, y in batches:
        nn.functional.cross_entropy(model(x), y).backward()
        seen += 1
    if not seen:
        raise PdsearchError("the taylor criterion needs data batches to compute gradients")


def full_group(structure: ModelStructure, group: ChannelGroup):
    """Torch-Pruning's group of every channel of ``group`` (what importances score)."""
    root = structure.model.get_submodule(group.name)
    handler = structure.graph.get_pruner_of_module(root).prune_out_channels
    return structure.graph.get_pruning_group(root, handler, list(range(group.channels)))


def lowest_channels(score: torch.Tensor, group: ChannelGroup, n_prune: int, keep: Sequence[int] = ()) -> list[int]:
    """The ``n_prune`` least important channels, the same slots in every conv group.

    ``keep`` (channels already chosen) stay chosen; the rest come from the remaining slots.
    """
    per = group.channels // group.channel_groups
    slot_score = score.detach().cpu().float().view(group.channel_groups, per).mean(0)
    chosen = sorted({c % per for c in keep})
    rest = [int(s) for s in torch.argsort(slot_score) if int(s) not in chosen]
    slots = (chosen + rest)[: n_prune // group.channel_groups]
    return sorted(s + k * per for s in slots for k in range(group.channel_groups))


def prune(
    structure: ModelStructure,
    rates: Sequence[float],
    criterion: str | Sequence[str] = "l1",
    seed: int = 0,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> nn.Module:
    """Prune ``structure.model`` in place, ``rates[g]`` of group g's channels; return it.

    ``criterion`` is one name, or one per group (as loss-aware allocation chooses them).
    ``batches`` (inputs, labels) feed the gradient-based criteria.
    """
    if len(rates) != len(structure.groups):
        raise ValueError(f"{len(rates)} rates for {len(structure.groups)} groups")
    criteria = [criterion] * len(rates) if isinstance(criterion, str) else list(criterion)
    if len(criteria) != len(rates):
        raise PdsearchError(f"{len(criteria)} criteria for {len(rates)} channel groups")
    model, graph = structure.model, structure.graph
    scorers = {name: GroupScorer(name) for name in set(criteria)}
    if NEEDS_GRADIENTS & set(criteria):
        accumulate_gradients(model, batches or [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for group, rate, name in zip(structure.groups, rates, criteria):
            n_prune = group.channels_to_prune(rate)
            if n_prune == 0:
                continue
            full = full_group(structure, group)
            drop = lowest_channels(scorers[name](full), group, n_prune)
            root = model.get_submodule(group.name)
            graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, drop).prune()
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        try:
            model(structure.example_input)
        except Exception as exc:
            raise PdsearchError(f"model cannot be pruned structurally: pruned model fails to run ({exc})") from None
    return model
