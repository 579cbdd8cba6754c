"""Real structured pruning: remove the least important channels of every group."""
from __future__ import annotations

import copy
from typing import Iterable, Sequence

import torch
from torch import nn

from pdsearch.errors import PdsearchError
from pdsearch.pruning.importance import GroupScorer, needs_gradients
from pdsearch.pruning.structure import ChannelGroup, ModelStructure, analyze


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
    if any(needs_gradients(name) for name in set(criteria)):
        accumulate_gradients(model, batches or [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for group, rate, name in zip(structure.groups, rates, criteria):
            n_prune = group.channels_to_prune(rate)
            if n_prune == 0:
                continue
            try:
                drop = lowest_channels(scorers[name](full_group(structure, group)), group, n_prune)
                root = model.get_submodule(group.name)
                graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, drop).prune()
            except PdsearchError:
                raise
            except Exception as exc:  # Torch-Pruning mis-mapped the channels through a cat, split or slice
                raise PdsearchError(f"model cannot be pruned structurally: Torch-Pruning failed removing channels "
                                    f"of {group.name} ({type(exc).__name__}: {exc})") from None
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        try:
            model(structure.example_input)
        except Exception as exc:
            raise PdsearchError(f"model cannot be pruned structurally: pruned model fails to run ({exc})") from None
    return model


def check_prunable(structure: ModelStructure, rate: float = 0.5) -> None:
    """Raise PdsearchError if removing channels breaks the model, which its dependency graph cannot tell.

    Prunes a copy, every group at ``rate``, and runs it: a second or two on the driver,
    instead of every trial failing the same way.
    """
    x = structure.example_input
    prune(analyze(copy.deepcopy(structure.model), x.shape[-1], x.shape[1]), [rate] * len(structure.groups))
