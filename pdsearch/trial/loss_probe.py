"""Loss-aware allocation's measurements (``policy.allocators.base.LossProbe``) on the trained baseline, in torch.

The loss with one more slice of a group switched off, per criterion, and short retraining
that keeps switched-off channels at zero. It stays in the default memory layout, whose
greedy the rounding of another layout could turn.
"""
from __future__ import annotations

import itertools
from typing import Callable

import torch
from torch import nn

from pdsearch.data.bundle import DataBundle
from pdsearch.policy.allocators.loss_aware import LossAwareSettings
from pdsearch.pruning import lowest_channels
from pdsearch.trial.channel_switch import ChannelSwitch, PrefixSplit, loss_and_accuracy, training_batches


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
