"""A user's own model, importable as 'user_models:tiny_net' (tests/ is on sys.path)."""
import time

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
    """Once pruned, sleeps 0.2 s per training step: trials last seconds without using the CPU."""

    def forward(self, x):
        if self.training and self.body[0].out_channels < 8:
            time.sleep(0.2)
        return TinyNet.forward(self, x)


def slow_net(num_classes: int = 10, in_channels: int = 1) -> SlowNet:
    return SlowNet(num_classes, in_channels)
