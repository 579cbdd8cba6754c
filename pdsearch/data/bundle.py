"""The data a trial reads: train / val / test splits and their batches.

Small datasets are held as tensors on the trial's device and augmented there (random
crop + flip), batched without a DataLoader; large image folders stream through a
DataLoader with workers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from pdsearch.errors import PdsearchError

Batch = tuple[torch.Tensor, torch.Tensor]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class TensorSplit:
    x: torch.Tensor  # float32, normalised, N×C×H×W
    y: torch.Tensor  # int64
    _on_device: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.y)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self.x.to(device), self.y.to(device))
        return self._on_device[key]


@dataclass
class DataBundle:
    name: str
    num_classes: int
    in_channels: int
    input_size: int
    train: TensorSplit | torch.utils.data.Dataset
    val: TensorSplit | torch.utils.data.Dataset
    test: TensorSplit | torch.utils.data.Dataset
    batch_size: int = 128
    crop: bool = True
    flip: bool = True
    workers: int = 2
    mean: tuple[float, ...] = IMAGENET_MEAN  # inputs are (pixels in [0, 1] - mean) / std, per channel
    std: tuple[float, ...] = IMAGENET_STD

    def batches(self, split: str, device: torch.device, train: bool = False, seed: int = 0) -> Iterator[Batch]:
        data = getattr(self, split)
        if isinstance(data, TensorSplit):
            return self._tensor_batches(data, device, train, seed)
        loader = torch.utils.data.DataLoader(
            data, batch_size=self.batch_size, shuffle=train, num_workers=self.workers,
            generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        return ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader)

    def _tensor_batches(self, split: TensorSplit, device: torch.device, train: bool, seed: int) -> Iterator[Batch]:
        x, y = split.on(device)
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(y), generator=gen) if train else torch.arange(len(y))
        pad = max(1, self.input_size // 8)
        for start in range(0, len(y), self.batch_size):
            idx = order[start : start + self.batch_size].to(device)
            xb, yb = x[idx], y[idx]
            if train and self.crop:
                xb = _random_crop(xb, pad, gen)
            if train and self.flip:
                flip = (torch.rand(len(xb), generator=gen) < 0.5).to(device)
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            yield xb, yb

    def with_channels(self, channels: int) -> "DataBundle":
        """Grayscale data fed to an RGB model: repeat the channel."""
        if channels == self.in_channels:
            return self
        if self.in_channels != 1 or not all(isinstance(s, TensorSplit) for s in (self.train, self.val, self.test)):
            raise PdsearchError(f"model needs {channels} input channels, dataset {self.name} has {self.in_channels}")
        rep = [TensorSplit(s.x.repeat(1, channels, 1, 1), s.y) for s in (self.train, self.val, self.test)]
        return dataclasses.replace(self, in_channels=channels, train=rep[0], val=rep[1], test=rep[2],
                                   mean=self.mean * channels, std=self.std * channels)


def _random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch, as one gather on the batch's device."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return padded[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
