"""FLOPs and parameters as fvcore counts them.

Convention: fvcore counts one fused multiply-add as one FLOP (so its "FLOPs" are MACs),
for a batch of one image; elementwise ops (ReLU, residual adds) are not counted.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from fvcore.nn import FlopCountAnalysis, parameter_count
from torch import nn


@dataclass
class Cost:
    flops: int
    params: int
    flops_by_layer: dict[str, int]
    params_by_layer: dict[str, int]


def count_cost(model: nn.Module, example_input: torch.Tensor) -> Cost:
    """Count ``model`` for one input like ``example_input`` (batch size is taken as 1)."""
    was_training = model.training
    model.eval()
    x = example_input[:1]
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            flops_by_module = dict(analysis.by_module())
            total = int(analysis.total())
    finally:
        model.train(was_training)
    params_by_module = dict(parameter_count(model))
    return Cost(
        flops=total,
        params=int(params_by_module.get("", 0)),
        flops_by_layer={k: int(v) for k, v in flops_by_module.items()},
        params_by_layer={k: int(v) for k, v in params_by_module.items()},
    )


def count_unit(n: float) -> tuple[str, float]:
    """The unit (G, M, K or none) that shows ``n`` with a short mantissa."""
    return next(((unit, scale) for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)) if abs(n) >= scale), ("", 1.0))


def human_count(n: float, digits: int = 3) -> str:
    """4089184256 -> '4.089G'."""
    unit, scale = count_unit(n)
    return f"{n / scale:.{digits}f}{unit}" if unit else f"{n:.0f}"
