"""A user's own model, importable as 'user_models:tiny_net' (tests/ is on sys.path)."""
import os
import time
from pathlib import Path

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def tiny_net(num_classes: int = 10, width: int = 8) -> TinyNet:
    return TinyNet(num_classes, width)


def not_a_model(num_classes: int = 10):
    return "surprise"


class FragileNet(TinyNet):
    """Diverges (NaN logits) once its first conv is pruned below 5 filters: a real failing trial."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__(num_classes, width=8)
        self.body[0] = nn.Conv2d(in_channels, 8, 3, padding=1)

    def forward(self, x):
        out = super().forward(x)
        return out * float("nan") if self.body[0].out_channels < 5 else out


def fragile_net(num_classes: int = 10, in_channels: int = 1) -> FragileNet:
    return FragileNet(num_classes, in_channels)


class RaisingNet(FragileNet):
    """Raises while training once its first conv is pruned below 5 filters: a bug in user code."""

    def forward(self, x):
        if self.training and self.body[0].out_channels < 5:
            raise RuntimeError(f"narrow layer: {self.body[0].out_channels} filters")
        return TinyNet.forward(self, x)


def raising_net(num_classes: int = 10, in_channels: int = 1) -> RaisingNet:
    return RaisingNet(num_classes, in_channels)


class SlowNet(FragileNet):
    """Once pruned, sleeps 0.2 s per training step: trials last seconds without using the CPU.

    Where PDSEARCH_TEST_HEARTBEATS names a folder, each such step writes its count to a file there
    named after the Ray node it runs on, so a test can tell when a trial is early in its training there.
    """

    def forward(self, x):
        if self.training and self.body[0].out_channels < 8:
            if heartbeats := os.environ.get("PDSEARCH_TEST_HEARTBEATS"):
                import ray
                self.steps = getattr(self, "steps", 0) + 1
                (Path(heartbeats) / ray.get_runtime_context().get_node_id()).write_text(str(self.steps))
            time.sleep(0.2)
        return TinyNet.forward(self, x)


def slow_net(num_classes: int = 10, in_channels: int = 1) -> SlowNet:
    return SlowNet(num_classes, in_channels)


class SpectralNet(nn.Module):
    """A conv net with an FFT inside: ONNX has no such operator."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.fft.fft2(self.conv(x)).real
        return self.fc(x.mean((2, 3)))


def spectral_net(num_classes: int = 10, in_channels: int = 3) -> SpectralNet:
    return SpectralNet(num_classes, in_channels)


class DoubleNet(nn.Module):
    """Exports to ONNX, but one convolution computes in float64, which ONNX Runtime's CPU kernels lack: the graph
    cannot be calibrated, so it cannot be quantized."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.mix = nn.Conv2d(8, 8, 1).double()
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.mix(torch.relu(self.conv(x)).double()).float()
        return self.fc(x.mean((2, 3)))


def double_net(num_classes: int = 10, in_channels: int = 1) -> DoubleNet:
    return DoubleNet(num_classes, in_channels)
