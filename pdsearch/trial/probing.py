"""What data-driven allocators measure on the trained baseline, by switching channels off.

Removing channels for real needs a fresh dependency graph per candidate; switching them
off (zeroing every parameter that produces them: the filters, their bias, the BatchNorm
scale and shift behind them) gives the same function at the cost of a few writes. Every
consumer then sees zeros on those channels, exactly as if they had been removed.

- ``measure_sensitivity``: each group alone at rates 0.1 … 0.9, BatchNorm re-estimated
  on training batches, loss and accuracy on a held-out slice of the training data.
- ``TorchLossProbe``: what loss-aware allocation asks (loss with one more slice off, per
  criterion), with short retraining that keeps switched-off channels at zero.

Both run only the network after the group (``PrefixSplit``): what runs before its first
producer is the same with the group off, and is computed once per batch. The profile
runs in channels_last, where BatchNorm's train-mode forward (its re-estimation, most of
the profile's time) is faster on the CPU (benchmarks/sensitivity_profile.py); loss-aware
stays in the default layout, whose greedy the rounding of another layout could turn.
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
from pdsearch.policy.allocators.loss_aware import LossAwareSettings
from pdsearch.policy.allocators.sensitivity import SensitivityProfile, SensitivitySettings
from pdsearch.pruning import ModelStructure, accumulate_gradients, analyze, full_group, lowest_channels
from pdsearch.pruning.importance import GroupScorer, needs_gradients
from pdsearch.trial.training import recalibrate_batchnorm

Batches = list[tuple[torch.Tensor, torch.Tensor]]
_SWITCHABLE = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
PROFILE_LAYOUT = torch.channels_last  # the profile's memory layout (see above)


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


@torch.no_grad()
def _reestimate(norms: list[nn.Module], forward: Callable, inputs: list) -> None:
    """recalibrate_batchnorm for ``norms`` only, through ``forward``."""
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    for x in inputs:
        forward(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def measure_sensitivity(model: nn.Module, data: DataBundle, criterion: str, settings: SensitivitySettings,
                        device: torch.device, seed: int = 0, key: str = "",
                        on_group: Callable[[int, int], None] | None = None) -> SensitivityProfile:
    """Each channel group pruned alone at every rate of ``settings.rates``, BatchNorm re-estimated.

    ``on_group(done, total)`` before the first group and after each.
    """
    switch = ChannelSwitch(model, data.input_size, data.in_channels, device, PROFILE_LAYOUT)
    batches = [(x.contiguous(memory_format=PROFILE_LAYOUT), y)
               for x, y in training_batches(data, device, settings.eval_batches + settings.bn_batches, seed)]
    held_out, calibration = batches[: settings.eval_batches], batches[settings.eval_batches:]
    recalibrate_batchnorm(switch.model, calibration)  # the reference sees the same re-estimation
    reference = copy.deepcopy(switch.model.state_dict())
    base_loss, base_accuracy = loss_and_accuracy(switch.model, held_out)
    split = PrefixSplit(switch.model)
    names = {m: n for n, m in switch.model.named_modules()}
    accuracy, loss = [], []
    if on_group:
        on_group(0, len(switch.groups))
    for g, group in enumerate(switch.groups):
        score = switch.score(g, criterion, calibration)
        cut = split.at({names[module] for module, _, _ in switch.producers[g]})
        with torch.no_grad():  # the reference's values at the cut, in train mode and in eval mode
            switch.model.load_state_dict(reference)
            switch.model.train()
            calibration_live = [cut.prefix(x) for x, _ in calibration]
            switch.model.load_state_dict(reference)  # undo what train mode did to the statistics
            switch.model.eval()
            held_out_live = [(cut.prefix(x), y) for x, y in held_out]
        row_acc, row_loss = [], []
        for rate in settings.rates:
            n_prune = group.channels_to_prune(min(rate, 0.999))
            switch.model.load_state_dict(reference)
            if n_prune:
                switch.switch_off(g, lowest_channels(score, group, n_prune))
                switch.model.train()
                _reestimate(cut.norms, cut.suffix, calibration_live)
                switch.model.eval()
            measured_loss, measured_acc = loss_and_accuracy(cut.suffix, held_out_live)
            row_loss.append(round(measured_loss, 6))
            row_acc.append(round(measured_acc, 4))
        accuracy.append(row_acc)
        loss.append(row_loss)
        if on_group:
            on_group(g + 1, len(switch.groups))
    return SensitivityProfile(
        groups=[g.name for g in switch.groups], rates=list(settings.rates), accuracy=accuracy, loss=loss,
        base_accuracy=round(base_accuracy, 4), base_loss=round(base_loss, 6), criterion=criterion, key=key,
    )


class TorchLossProbe:
    """LAASP's measurements on a working copy of the baseline (see loss_aware.LossAware)."""

    def __init__(self, model: nn.Module, data: DataBundle, settings: LossAwareSettings, lr: float,
                 device: torch.device, seed: int = 0) -> None:
        self.switch = ChannelSwitch(model, data.input_size, data.in_channels, device)
        self.batches = training_batches(data, device, settings.loss_batches, seed)
        self.data, self.device, self.seed = data, device, seed
        self.settings, self.lr = settings, lr
        self.off: dict[int, list[int]] = {}  # group -> channels switched off for good
        self.scores: dict[tuple[int, str], torch.Tensor] = {}  # valid until weights change (retraining)
        self.losses: dict[tuple[int, tuple[int, ...]], float] = {}  # valid until the next commit
        self.bursts = 0
        split, names = PrefixSplit(self.switch.model), {m: n for n, m in self.switch.model.named_modules()}
        self.cuts = [split.at({names[m] for m, _, _ in producers}) for producers in self.switch.producers]
        # group -> the loss batches' values at its cut: valid until a weight before the cut changes
        self.live: dict[int, list] = {}

    def loss(self) -> float:
        return loss_and_accuracy(self.switch.model, self.batches)[0]

    def _channels(self, g: int, criterion: str, removed: int) -> list[int]:
        # Switching channels off changes no other group's weights, and only the scores of
        # this group's channels already off: scores stay valid until retraining.
        if (g, criterion) not in self.scores:
            self.scores[g, criterion] = self.switch.score(g, criterion, self.batches)
        return lowest_channels(self.scores[g, criterion], self.switch.groups[g], removed, keep=self.off.get(g, []))

    def loss_with(self, group: int, criterion: str, removed: int) -> float:
        channels = self._channels(group, criterion, removed)
        key = (group, tuple(channels))  # criteria often agree (l1 and l2): measure each channel set once
        if key not in self.losses:
            cut = self.cuts[group]
            self.switch.model.eval()
            if group not in self.live:
                with torch.no_grad():
                    self.live[group] = [(cut.prefix(x), y) for x, y in self.batches]
            saved = self.switch.switch_off(group, channels)
            try:
                self.losses[key] = loss_and_accuracy(cut.suffix, self.live[group])[0]
            finally:
                self.switch.restore(saved)
        return self.losses[key]

    def commit(self, group: int, criterion: str, removed: int) -> None:
        self.losses.clear()
        self.off[group] = self._channels(group, criterion, removed)
        self.switch.switch_off(group, self.off[group])
        # the groups cut after this one's first producer computed their values with it whole
        self.live = {g: v for g, v in self.live.items() if self.cuts[g].index <= self.cuts[group].index}

    def retrain(self) -> None:
        """A few SGD steps; switched-off channels are zeroed again after each."""
        model = self.switch.model
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9)
        model.train()
        self.bursts += 1
        batches = self.data.batches("train", self.device, train=True, seed=self.seed * 7919 + self.bursts)
        for x, y in itertools.islice(batches, self.settings.retrain_steps):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            for g, channels in self.off.items():
                self.switch.switch_off(g, channels)
        model.zero_grad(set_to_none=True)
        model.eval()
        self.scores.clear()
        self.losses.clear()
        self.live.clear()


def loss_probe_factory(model: nn.Module, data: DataBundle, lr: float, device: torch.device, seed: int = 0
                       ) -> Callable[[LossAwareSettings], TorchLossProbe]:
    """What Problem.probe holds: builds a probe only when a loss-aware policy asks for one."""
    return lambda settings: TorchLossProbe(model, data, settings, lr, device, seed)
