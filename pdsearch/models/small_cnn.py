"""A small VGG-style CNN sized for 8x8..32x32 inputs such as the digits data.

Small enough that a CPU trial (prune + fine-tune) takes seconds, deep enough (four
convs and a hidden FC layer) that pruning distributions differ from each other.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn(in_channels, w), *_conv_bn(w, w), nn.MaxPool2d(2),
            *_conv_bn(w, 2 * w), *_conv_bn(2 * w, 2 * w), nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * w * 4, 4 * w), nn.ReLU(inplace=True), nn.Linear(4 * w, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def small_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, width)
