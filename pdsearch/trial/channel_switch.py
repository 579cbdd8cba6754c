"""Channels switched off instead of removed: what data-driven allocators measure the baseline with.

Removing channels for real needs a fresh dependency graph per candidate; switching them
off (zeroing every parameter that produces them: the filters, their bias, the BatchNorm
scale and shift behind them) gives the same function at the cost of a few writes. Every
consumer then sees zeros on those channels, exactly as if they had been removed.

Measurements run only the network after the group (``PrefixSplit``): what runs before its
first producer is the same with the group off, and is computed once per batch.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx
from torch import nn

from pdsearch.data.bundle import DataBundle
from pdsearch.pruning import ModelStructure, accumulate_gradients, analyze, full_group
from pdsearch.pruning.importance import GroupScorer, needs_gradients

Batches = list[tuple[torch.Tensor, torch.Tensor]]
_SWITCHABLE = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


class ChannelSwitch:
    """A copy of a model whose channels can be switched off group by group."""

    def __init__(self, model: nn.Module, input_size: int, in_channels: int, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self.structure: ModelStructure = analyze(copy.deepcopy(model).cpu(), input_size, in_channels)
        self.model = self.structure.model.to(device, memory_format=memory_format)
        self.device = device
        self.full = [full_group(self.structure, g) for g in self.groups]
        self.producers: list[list[tuple[nn.Module, torch.Tensor, torch.Tensor]]] = []
        graph = self.structure.graph
        for full in self.full:
            members = []
            for item in full:
                module = item.dep.target.module
                if graph.is_out_channel_pruning_fn(item.dep.handler) and isinstance(module, _SWITCHABLE):
                    idxs = torch.tensor([int(i) for i in item.idxs])
                    roots = torch.tensor([int(i) for i in item.root_idxs])
                    members.append((module, idxs, roots))
            self.producers.append(members)

    @property
    def groups(self):
        return self.structure.groups

    def score(self, g: int, criterion: str, batches: Batches) -> torch.Tensor:
        if needs_gradients(criterion):
            accumulate_gradients(self.model, batches)
        with torch.no_grad():
            return GroupScorer(criterion)(self.full[g])

    @torch.no_grad()
    def switch_off(self, g: int, channels: list[int]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Zero the producers of ``channels`` of group g; returns what restore() needs."""
        wanted = torch.tensor(channels, dtype=torch.long)
        saved = []
        for module, idxs, roots in self.producers[g]:
            rows = idxs[torch.isin(roots, wanted)].to(self.device)
            for param in (module.weight, module.bias):
                if param is not None:
                    saved.append((param, rows, param.data[rows].clone()))
                    param.data[rows] = 0
        return saved

    @staticmethod
    @torch.no_grad()
    def restore(saved) -> None:
        for param, rows, values in saved:
            param.data[rows] = values


@torch.no_grad()
def loss_and_accuracy(model: nn.Module | Callable, batches: list) -> tuple[float, float]:
    """On (input, labels) batches; ``model`` is run as it is (a module is put in eval mode first)."""
    if isinstance(model, nn.Module):
        model.eval()
    loss = correct = seen = 0.0
    for x, y in batches:
        logits = model(x).float()
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += float((logits.argmax(1) == y).sum())
        seen += len(y)
    return loss / max(seen, 1), 100.0 * correct / max(seen, 1)


def training_batches(data: DataBundle, device: torch.device, count: int, seed: int) -> Batches:
    """A fixed list of shuffled training batches (the same every call for the same seed)."""
    return list(itertools.islice(data.batches("train", device, train=True, seed=seed), count))


class PrefixSplit:
    """The model cut where a group's channels are first switched off: the part before is run once per batch.

    Whatever runs before the first layer that produces a group's channels computes the
    same with the group switched off, so its outputs on the fixed batches are kept and
    each measurement runs only the rest (torch.fx splits the graph; a model fx cannot
    trace is run whole). BatchNorm layers before the cut keep the reference's statistics,
    which their re-estimation would reproduce exactly.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        try:
            self.traced: torch.fx.GraphModule | None = torch.fx.GraphModule(model, _Tracer().trace(model))
        except Exception:  # dynamic control flow, or an op fx cannot trace
            self.traced = None

    def at(self, modules: set[str]) -> Cut:
        """The cut before the first node that calls or reads one of ``modules``."""
        norms = {n: m for n, m in self.model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        if self.traced is None:
            return Cut(0, lambda x: (x,), lambda live_values: self.model(*live_values), list(norms.values()))
        nodes = list(self.traced.graph.nodes)
        cut = next((i for i, n in enumerate(nodes) if _owner(n) in modules), 0)
        before, after = nodes[:cut], set(nodes[cut:])
        live = [n for n in before if any(user in after for user in n.users)]
        prefix_graph, suffix_graph = torch.fx.Graph(), torch.fx.Graph()
        env: dict = {}
        for node in before:
            env[node] = prefix_graph.node_copy(node, lambda a: env[a])
        prefix_graph.output(tuple(env[n] for n in live))
        env = {n: suffix_graph.placeholder(f"live_{i}") for i, n in enumerate(live)}
        for node in nodes[cut:]:
            env[node] = suffix_graph.node_copy(node, lambda a: env[a])
        prefix = torch.fx.GraphModule(self.traced, prefix_graph)
        suffix = torch.fx.GraphModule(self.traced, suffix_graph)
        run_after = {_owner(n) for n in nodes[cut:]}
        return Cut(cut, prefix, lambda live_values: suffix(*live_values), [m for n, m in norms.items() if n in run_after])


@dataclass
class Cut:
    index: int  # of the first node after the cut, in the traced graph's order
    prefix: Callable  # input -> the values the rest reads (a tuple)
    suffix: Callable  # those values -> the model's output
    norms: list[nn.Module]  # the BatchNorm layers the suffix runs


class _Tracer(torch.fx.Tracer):
    """Keeps every BatchNorm whole (timm's BatchNormAct2d too): traced through, its forward's
    train/eval branch would be frozen as it was at tracing."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, nn.modules.batchnorm._BatchNorm) or super().is_leaf_module(m, qualified_name)


def _owner(node: torch.fx.Node) -> str | None:
    """The module a node calls, or whose parameter or buffer it reads."""
    if node.op == "call_module":
        return str(node.target)
    if node.op == "get_attr":
        return str(node.target).rpartition(".")[0]
    return None
