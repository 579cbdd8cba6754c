"""What a layer's latency depends on besides the channels it keeps: its kind, kernel, stride, groups and input size.

A latency table (``latency_table``) times each distinct shape alone; ``layer_shapes`` reads them off a model by
running it once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerShape:
    """What a layer's latency depends on besides the channels it keeps."""

    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...] = (1, 1)
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1
    height: int = 1  # of its input
    width: int = 1

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def module(self, cin: int, cout: int) -> nn.Module:
        """The layer alone at these channel counts, as the runtime will run it."""
        if self.kind == "linear":
            return nn.Linear(cin, cout)
        groups = cin if self.depthwise else self.groups
        return nn.Sequential(nn.Conv2d(cin, cout, self.kernel, self.stride, self.padding, self.dilation, groups,
                                       bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    def activations(self, cin: float, cout: float) -> float:
        """Elements the layer reads and writes per image (millions): what a layout change copies."""
        if self.kind == "linear":
            return (cin + cout) * 1e-6
        out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
               for n, p, d, k, s in zip((self.height, self.width), self.padding, self.dilation, self.kernel, self.stride)]
        return (cin * self.height * self.width + cout * out[0] * out[1]) * 1e-6

    def example(self, cin: int, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, cin) if self.kind == "linear" else \
            torch.randn(batch_size, cin, self.height, self.width)


def layer_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, LayerShape]:
    """Every Conv2d and Linear leaf of ``model`` with its input's spatial size, in execution order."""
    found: dict[str, LayerShape] = {}

    def hook(module, inputs, name):
        x = inputs[0]
        if isinstance(module, nn.Linear):
            found.setdefault(name, LayerShape("linear", module.in_features, module.out_features))
        else:
            found.setdefault(name, LayerShape(
                "conv", module.in_channels, module.out_channels, tuple(module.kernel_size), tuple(module.stride),
                tuple(module.padding) if not isinstance(module.padding, str) else (0, 0), tuple(module.dilation),
                module.groups, int(x.shape[-2]), int(x.shape[-1])))

    hooks = [m.register_forward_pre_hook(lambda mod, inp, name=name: hook(mod, inp, name))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return found


def structure_digest(shapes: dict[str, LayerShape]) -> str:
    """The model's layers and channel counts (not the input size, keyed apart): what a table fits."""
    spec = [(name, s.kind, s.in_channels, s.out_channels, s.kernel, s.stride, s.groups) for name, s in shapes.items()]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]
