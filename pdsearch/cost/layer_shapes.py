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


# Activations a runtime does not fold into the conv before them: a layer is timed with the one that follows it.
# ReLU-like ones (ReLU, ReLU6 as Clip, none before an add) fuse into the conv alike and are timed as ReLU.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "hardswish": nn.Hardswish, "silu": nn.SiLU, "gelu": nn.GELU, "mish": nn.Mish,
    "sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid, "tanh": nn.Tanh,
}
_ACTIVATION_NAMES = {cls: name for name, cls in ACTIVATIONS.items()}
_PASS_THROUGH = (nn.modules.batchnorm._BatchNorm, nn.Identity, nn.Dropout)  # between a conv and its activation


@dataclass(frozen=True)
class LayerShape:
    """What a layer's latency depends on besides the channels it keeps.

    A squeeze-excitation unit ("se": pool, two 1x1 layers, a gate, a product with its input) is one shape:
    timed alone its 1x1 layers cost nothing, but the pool and the product read and write the whole feature
    map, as much as the depthwise conv before them. Its in_channels are the feature map's, its
    out_channels the squeezed ones.
    """

    kind: str  # "conv", "linear" or "se"
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...] = (1, 1)
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1
    height: int = 1  # of its input
    width: int = 1
    activation: str = "relu"  # what follows it (an "se" unit: between its two layers)
    gate: str = "sigmoid"  # an "se" unit's gate

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def stem(self) -> bool:
        """A conv on the image: its input channels are never pruned."""
        return self.kind == "conv" and self.in_channels <= 4

    def aligned(self, cin: float, cout: float, block: int) -> bool:
        """Whether its kernels run on the multiple ``block`` they favour at these channels."""
        if self.kind == "se":  # its squeezed channels are 1x1: no layout to leave
            return round(cin) % block == 0
        return (self.stem or round(cin) % block == 0) and round(cout) % block == 0

    @property
    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def module(self, cin: int, cout: int) -> nn.Module:
        """The layer alone at these channel counts, as the runtime will run it."""
        act = ACTIVATIONS[self.activation]()
        if self.kind == "linear":
            return nn.Linear(cin, cout)
        if self.kind == "se":
            return SqueezeExcitation(cin, cout, act, ACTIVATIONS[self.gate]())
        groups = cin if self.depthwise else self.groups
        return nn.Sequential(nn.Conv2d(cin, cout, self.kernel, self.stride, self.padding, self.dilation, groups,
                                       bias=False), nn.BatchNorm2d(cout), act)

    def activations(self, cin: float, cout: float) -> float:
        """Elements the layer reads and writes per image (millions): what a layout change copies."""
        if self.kind == "linear":
            return (cin + cout) * 1e-6
        if self.kind == "se":
            return 2 * cin * self.height * self.width * 1e-6
        out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
               for n, p, d, k, s in zip((self.height, self.width), self.padding, self.dilation, self.kernel, self.stride)]
        return (cin * self.height * self.width + cout * out[0] * out[1]) * 1e-6

    def example(self, cin: int, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, cin) if self.kind == "linear" else \
            torch.randn(batch_size, cin, self.height, self.width)


class SqueezeExcitation(nn.Module):
    """A squeeze-excitation unit as models write it (torchvision's, timm's): x * gate(fc2(act(fc1(pool(x)))))."""

    def __init__(self, channels: int, squeezed: int, activation: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeezed, 1), nn.Conv2d(squeezed, channels, 1)
        self.activation, self.gate = activation, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.activation(self.fc1(self.pool(x)))))


def layer_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, LayerShape]:
    """Every Conv2d and Linear leaf of ``model`` with its input's spatial size and the activation after it, in
    execution order; the two layers of a squeeze-excitation unit are one "se" shape, named after the first."""
    found: dict[str, LayerShape] = {}
    order: list[nn.Module] = []  # leaves as they ran
    position: dict[str, int] = {}
    keeps_shape: dict[str, tuple[int, ...]] = {}  # containers whose output has their input's 4-D shape

    def leaf_hook(module, inputs, name):
        position.setdefault(name, len(order))
        order.append(module)
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            return
        x = inputs[0]
        if isinstance(module, nn.Linear):
            found.setdefault(name, LayerShape("linear", module.in_features, module.out_features))
        else:
            found.setdefault(name, LayerShape(
                "conv", module.in_channels, module.out_channels, tuple(module.kernel_size), tuple(module.stride),
                tuple(module.padding) if not isinstance(module.padding, str) else (0, 0), tuple(module.dilation),
                module.groups, int(x.shape[-2]), int(x.shape[-1])))

    def container_hook(module, inputs, output, name):
        x = inputs[0] if inputs else None
        if isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor) and x.dim() == 4 and output.shape == x.shape:
            keeps_shape.setdefault(name, tuple(x.shape))

    modules = dict(model.named_modules())
    hooks = [m.register_forward_pre_hook(lambda mod, inp, name=name: leaf_hook(mod, inp, name))
             for name, m in modules.items() if not list(m.children())]
    hooks += [m.register_forward_hook(lambda mod, inp, out, name=name: container_hook(mod, inp, out, name))
              for name, m in modules.items() if name and list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()

    def activation_after(name: str) -> str | None:
        i = position[name] + 1
        while i < len(order) and isinstance(order[i], _PASS_THROUGH):
            i += 1
        return _ACTIVATION_NAMES.get(type(order[i])) if i < len(order) else None

    for name, shape in list(found.items()):
        act = activation_after(name)
        if act:
            found[name] = dataclasses.replace(shape, activation=act)
    for container, (_, channels, height, width) in keeps_shape.items():
        inner = [n for n in found if n.startswith(container + ".")]
        if len(inner) != 2 or height * width == 1:
            continue
        first, second = (found[n] for n in inner)
        if first.in_channels == channels == second.out_channels and first.height * first.width == 1 \
                and first.kind == second.kind == "conv" and first.kernel == second.kernel == (1, 1):
            found[inner[0]] = LayerShape("se", channels, first.out_channels, height=height, width=width,
                                         activation=first.activation, gate=activation_after(inner[1]) or "sigmoid")
            del found[inner[1]]
    return found


def structure_digest(shapes: dict[str, LayerShape]) -> str:
    """The model's layers and channel counts (not the input size, keyed apart): what a table fits."""
    spec = [(name, s.kind, s.in_channels, s.out_channels, s.kernel, s.stride, s.groups) for name, s in shapes.items()]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]
