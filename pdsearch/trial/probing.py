"""What data-driven allocators measure on the trained baseline, by switching channels off.

Removing channels for real needs a fresh dependency graph per candidate; switching them
off (zeroing every parameter that produces them: the filters, their bias, the BatchNorm
scale and shift behind them) gives the same function at the cost of a few writes. Every
consumer then sees zeros on those channels, exactly as if they had been removed.

- ``measure_sensitivity``: each group alone at rates 0.1 … 0.9, BatchNorm re-estimated
  on training batches, loss and accuracy on a held-out slice of the training data.
- ``TorchLossProbe``: what loss-aware allocation asks (loss with one more slice off, per
  criterion), with short retraining that keeps switched-off channels at zero.
"""
from __future__ import annotations

import copy
import itertools
from typing import Callable

import torch
from torch import nn

from pdsearch.data.bundle import DataBundle
from pdsearch.policy.allocators.loss_aware import LossAwareSettings
from pdsearch.policy.allocators.sensitivity import SensitivityProfile, SensitivitySettings
from pdsearch.pruning import ModelStructure, accumulate_gradients, analyze, full_group, lowest_channels
from pdsearch.pruning.criteria import GroupScorer, needs_gradients
from pdsearch.trial.training import recalibrate_batchnorm

Batches = list[tuple[torch.Tensor, torch.Tensor]]
_SWITCHABLE = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


class ChannelSwitch:
    """A copy of a model whose channels can be switched off group by group."""

    def __init__(self, model: nn.Module, input_size: int, in_channels: int, device: torch.device) -> None:
        self.structure: ModelStructure = analyze(copy.deepcopy(model).cpu(), input_size, in_channels)
        self.model = self.structure.model.to(device)
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
def loss_and_accuracy(model: nn.Module, batches: Batches) -> tuple[float, float]:
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


def measure_sensitivity(model: nn.Module, data: DataBundle, criterion: str, settings: SensitivitySettings,
                        device: torch.device, seed: int = 0, key: str = "",
                        on_group: Callable[[int, int], None] | None = None) -> SensitivityProfile:
    """Each channel group pruned alone at every rate of ``settings.rates``, BatchNorm re-estimated.

    ``on_group(done, total)`` before the first group and after each.
    """
    switch = ChannelSwitch(model, data.input_size, data.in_channels, device)
    batches = training_batches(data, device, settings.eval_batches + settings.bn_batches, seed)
    held_out, calibration = batches[: settings.eval_batches], batches[settings.eval_batches:]
    state = copy.deepcopy(switch.model.state_dict())
    recalibrate_batchnorm(switch.model, calibration)  # the reference sees the same re-estimation
    base_loss, base_accuracy = loss_and_accuracy(switch.model, held_out)
    accuracy, loss = [], []
    if on_group:
        on_group(0, len(switch.groups))
    for g, group in enumerate(switch.groups):
        score = switch.score(g, criterion, calibration)
        row_acc, row_loss = [], []
        for rate in settings.rates:
            n_prune = group.channels_to_prune(min(rate, 0.999))
            switch.model.load_state_dict(state)
            if n_prune:
                switch.switch_off(g, lowest_channels(score, group, n_prune))
                recalibrate_batchnorm(switch.model, calibration)
            measured_loss, measured_acc = loss_and_accuracy(switch.model, held_out)
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
            saved = self.switch.switch_off(group, channels)
            try:
                self.losses[key] = self.loss()
            finally:
                self.switch.restore(saved)
        return self.losses[key]

    def commit(self, group: int, criterion: str, removed: int) -> None:
        self.losses.clear()
        self.off[group] = self._channels(group, criterion, removed)
        self.switch.switch_off(group, self.off[group])

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


def loss_probe_factory(model: nn.Module, data: DataBundle, lr: float, device: torch.device, seed: int = 0
                       ) -> Callable[[LossAwareSettings], TorchLossProbe]:
    """What Problem.probe holds: builds a probe only when a loss-aware policy asks for one."""
    return lambda settings: TorchLossProbe(model, data, settings, lr, device, seed)
