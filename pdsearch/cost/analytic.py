"""Predict the FLOPs and params of a pruned model without pruning it.

fvcore's count of every layer is multilinear in that layer's channel counts (a conv
costs Cout·Cin/groups·k²·H·W, a BN costs C·H·W), so a pruned layer costs its base count
times the kept fraction of each channel dimension. The group structure says how many
channels of which layer dimension a group removes, so a whole policy is one pair of
matrix-vector products: planning a grid never touches a model.

Layers without parameters (pools) scale with the last parameterised layer run before
them; FLOPs outside any layer (functional ops in a container's forward, e.g. a final
F.adaptive_avg_pool2d) are held constant. Both are a few thousandths of a percent of a
CNN's FLOPs. A parameter outside any layer that Torch-Pruning prunes along one dimension
(ConvNeXt's layer scale) is a row of its own, costing no FLOPs.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from pdsearch.cost.count import Cost, count_cost
from pdsearch.pruning.structure import ModelStructure

_COUPLED = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm, nn.PReLU)


def _is_coupled(m: nn.Module) -> bool:
    """Layers whose input and output channels are the same channels."""
    depthwise = isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels
    return depthwise or isinstance(m, _COUPLED)


class CostModel:
    """FLOPs and params of ``structure``'s model after removing ``pruned[g]`` channels of group g."""

    def __init__(self, structure: ModelStructure, base: Cost | None = None) -> None:
        self.base = base or count_cost(structure.model, structure.example_input)
        model, graph = structure.model, structure.graph
        loose = {id(u.parameters): u.pruning_dim for u in graph.unwrapped_parameters}
        parameters = dict(model.named_parameters())
        names = structure.layer_order + sorted(
            {m.module for g in structure.groups for m in g.members if m.module in parameters})
        self.index = index = {n: i for i, n in enumerate(names)}  # layer name -> its row
        n_layers, n_groups = len(names), len(structure.groups)
        self.remove_out = np.zeros((n_layers, n_groups))
        self.remove_in = np.zeros((n_layers, n_groups))
        for g in structure.groups:
            for member in g.members:
                if member.module in index:
                    target = self.remove_out if member.direction == "out" else self.remove_in
                    target[index[member.module], g.index] = member.per_channel

        self.out_ch = np.ones(n_layers)
        self.in_ch = np.ones(n_layers)
        self.coupled = np.zeros(n_layers, bool)
        self.bilinear = np.zeros(n_layers, bool)  # conv / linear: cost ∝ out·in
        self.weight = np.zeros(n_layers)  # params that scale with out·in (bilinear) or c (coupled)
        self.bias = np.zeros(n_layers)  # params that scale with out only
        self.const_params = float(self.base.params)
        self.flops = np.array([float(self._own_flops(model, n)) for n in names])
        ref = -1  # last parameterised layer: pools follow its channels
        self.follow = np.full(n_layers, -1)
        for i, name in enumerate(names):
            if name in parameters:  # a loose parameter: its own channels
                p = parameters[name]
                self.out_ch[i] = self.in_ch[i] = p.shape[loose[id(p)]]
                self.coupled[i], self.weight[i] = True, p.numel()
                self.const_params -= p.numel()
                continue
            m = model.get_submodule(name)
            params = sum(p.numel() for p in m.parameters(recurse=False))
            pruner = graph.get_pruner_of_module(m)
            if pruner is None or not params:
                self.follow[i] = ref
                continue
            ref = i
            self.out_ch[i] = pruner.get_out_channels(m) or 1
            self.in_ch[i] = pruner.get_in_channels(m) or 1
            self.const_params -= params
            if _is_coupled(m):
                self.coupled[i] = True
                self.weight[i] = params
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                self.bilinear[i] = True
                self.bias[i] = 0 if m.bias is None else m.bias.numel()
                self.weight[i] = params - self.bias[i]
            else:  # an unknown parameterised layer: scale with its output channels
                self.coupled[i] = True
                self.weight[i] = params
        self.const_flops = float(self.base.flops) - float(self.flops.sum())

    def _own_flops(self, model: nn.Module, name: str) -> int:
        """fvcore's count of a layer less its children's (a BatchNormAct2d's activation)."""
        by_module = self.base.flops_by_layer
        if name not in by_module:
            return 0
        prefix = f"{name}." if name else ""
        return by_module[name] - sum(by_module.get(prefix + child, 0) for child, _ in model.get_submodule(name).named_children())

    def predict(self, pruned: np.ndarray) -> tuple[float, float]:
        """(FLOPs, params) for channels removed per group; fractional counts interpolate."""
        pruned = np.asarray(pruned, dtype=float)
        cut_out = self.remove_out @ pruned
        cut_in = self.remove_in @ pruned
        f_out = 1.0 - cut_out / self.out_ch
        f_in = 1.0 - cut_in / self.in_ch
        f_coupled = 1.0 - np.maximum(cut_out, cut_in) / self.out_ch
        own = np.where(self.bilinear, f_out * f_in, np.where(self.coupled, f_coupled, 1.0))
        out_frac = np.where(self.coupled, f_coupled, f_out)
        follows = self.follow >= 0
        scale = own.copy()
        scale[follows] = out_frac[self.follow[follows]]
        flops = self.const_flops + float(self.flops @ scale)
        params = self.const_params + float(self.weight @ own) + float(self.bias @ np.where(self.bilinear, f_out, 0.0))
        return flops, params
