"""A model's prunable channel groups, discovered with Torch-Pruning's dependency graph.

A *group* is a set of channels that must be removed together: a plain conv's filters
with the BN behind it and the next layer's inputs; a ResNet stage's whole residual
stream; a depthwise conv's channels with their producer. Groups are what a pruning
policy assigns rates to.

Depth position of a group: the mean forward-execution index of the layers whose
*output* channels it removes, rescaled so the shallowest group sits at 0 and the
deepest at 1. A VGG conv is its own group, so its position is its layer index; a
residual stream sits in the middle of its stage.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from pdsearch.errors import PdsearchError

PRUNABLE_ROOTS = (nn.Conv2d, nn.Linear)
GROUP_SEARCH_LIMIT_S = 60.0  # seconds; a few for a ResNet-50, unbounded on some channel-padding models


class _GroupSearchTimeout(BaseException):  # not an Exception: no `except Exception` on the way swallows it
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after ``seconds`` (in the main thread, as on the driver; elsewhere unbounded)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_: object) -> None:
        raise _GroupSearchTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class MemberDim:
    """One layer dimension that a group shrinks: ``per_channel`` entries go per channel."""

    module: str
    direction: str  # "out" or "in"
    per_channel: int


@dataclass
class ChannelGroup:
    index: int
    name: str  # the root layer's qualified name
    channels: int
    channel_groups: int  # grouped convs prune the same slots in every conv group
    position: float
    kind: str  # "conv" or "linear": the type of the root layer
    members: list[MemberDim] = field(default_factory=list)

    def channels_to_prune(self, rate: float, round_to: int = 1) -> int:
        """Kept = floor(C·(1−rate)) per conv group, never fewer than one channel.

        With ``round_to`` k > 1 the kept count is the nearest multiple of k (of the conv
        groups too), never below one multiple; a group of fewer than k channels is left whole.
        """
        if not 0.0 <= rate < 1.0:
            raise PdsearchError(f"pruning rate {rate:.4f} for layer {self.name} must be in [0, 1)")
        per = self.channels // self.channel_groups
        keep = max(1, math.floor(per * (1.0 - rate) + 1e-9))
        if round_to > 1:
            if self.channels < round_to:
                return 0
            unit = math.lcm(round_to, self.channel_groups)
            kept = min(max(unit, round(keep * self.channel_groups / unit) * unit), self.channels // unit * unit)
            return self.channels - kept
        return (per - keep) * self.channel_groups

    def step(self, round_to: int = 1) -> float:
        """The rate change that moves this group by one unit of channels."""
        return (math.lcm(round_to, self.channel_groups) if round_to > 1 else self.channel_groups) / self.channels


@dataclass
class ModelStructure:
    """What planning needs to know about a model: its groups, in depth order."""

    model: nn.Module
    example_input: torch.Tensor
    graph: tp.DependencyGraph
    groups: list[ChannelGroup]
    classifier: str
    # in forward-execution order: leaf modules, and containers holding parameters of their own
    # (timm's BatchNormAct2d is a BatchNorm2d with an activation inside)
    layer_order: list[str]


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _channel_groups(graph: tp.DependencyGraph, group) -> int:
    """Largest conv-group / GroupNorm grouping among a group's members (1 = none)."""
    found = [1]
    for item in group:
        m = item.dep.target.module
        if isinstance(m, nn.Conv2d) and m.groups > 1 and not _is_depthwise(m):
            found.append(m.groups)
        elif isinstance(m, nn.GroupNorm):
            found.append(m.num_groups)
    return max(found)


def _execution_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    order: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, inp, name=name: order.append(name))
        for name, m in model.named_modules()
        if not list(m.children()) or any(True for _ in m.parameters(recurse=False))
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    seen: set[str] = set()
    return [n for n in order if not (n in seen or seen.add(n))]


def analyze(model: nn.Module, input_size: int, in_channels: int = 3) -> ModelStructure:
    """Trace ``model`` once and return its channel groups, shallowest first."""
    model.eval()
    x = torch.randn(1, in_channels, input_size, input_size)
    try:
        layer_order = _execution_order(model, x)
    except Exception as exc:  # a user's model may fail on any input
        raise PdsearchError(
            f"model forward failed at input size {input_size}x{input_size} with {in_channels} channels: {exc}"
        ) from None
    names = {m: n for n, m in model.named_modules()}
    layers = [n for n in layer_order if isinstance(model.get_submodule(n), PRUNABLE_ROOTS)]
    if not layers:
        raise PdsearchError("model has no Conv2d or Linear layer to prune")
    classifier = layers[-1]
    try:
        with _time_limit(GROUP_SEARCH_LIMIT_S):
            graph = tp.DependencyGraph().build_dependency(model, x, verbose=False)
            raw_groups = list(
                graph.get_all_groups(
                    ignored_layers=[model.get_submodule(classifier)], root_module_types=PRUNABLE_ROOTS
                )
            )
    except _GroupSearchTimeout:
        raise PdsearchError(
            f"model cannot be pruned structurally: Torch-Pruning's search for its channel groups did not finish "
            f"in {GROUP_SEARCH_LIMIT_S:g} s (seen on ReXNet, whose residuals add into a slice of the channels "
            f"and concatenate the rest)") from None
    except Exception as exc:
        raise PdsearchError(
            f"model cannot be pruned structurally: Torch-Pruning could not trace its channel "
            f"dependencies ({type(exc).__name__}: {exc}); channel shuffles and similar reshapes are not supported"
        ) from None

    exec_index = {n: i for i, n in enumerate(layer_order)}
    param_names = {id(p): n for n, p in model.named_parameters()}
    groups: list[ChannelGroup] = []
    for raw in raw_groups:
        root = raw[0].dep.target.module
        channels = len(raw[0].idxs)
        dims: dict[tuple[str, str], int] = {}
        for item in raw:
            module = item.dep.target.module
            if isinstance(module, nn.Parameter):  # one outside any layer (a layer scale), named as a parameter
                if id(module) not in param_names:
                    continue
                key = (param_names[id(module)], "out")
            elif module in names:
                key = (names[module], "out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in")
            else:  # elementwise ops, reshapes: no parameters, no cost of their own
                continue
            dims[key] = max(dims.get(key, 0), len(item.idxs) // channels)
        producers = [exec_index[n] for (n, d) in dims if d == "out" and n in exec_index and n in layers]
        if not producers:
            continue
        groups.append(
            ChannelGroup(
                index=-1,
                name=names[root],
                channels=channels,
                channel_groups=_channel_groups(graph, raw),
                position=sum(producers) / len(producers),
                kind="linear" if isinstance(root, nn.Linear) else "conv",
                members=[MemberDim(n, d, k) for (n, d), k in dims.items()],
            )
        )
    if not groups:
        raise PdsearchError("model has no prunable channel group (only the classifier is prunable)")
    groups.sort(key=lambda g: g.position)
    lo, hi = groups[0].position, groups[-1].position
    for i, g in enumerate(groups):
        g.index = i
        g.position = 0.5 if hi == lo else (g.position - lo) / (hi - lo)
    return ModelStructure(model, x, graph, groups, classifier, layer_order)

