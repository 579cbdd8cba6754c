"""FlexiPrune's published pruning distributions, reproduced exactly.

Conv layer i gets PR_i = trunc(T[PD][i] · GPR / 50) / 100; the two hidden FC layers get
GPR / 100; the classifier is never pruned. T is in percent, one entry per conv layer.

As published, the PD4 and PD5 rows of AlexNet, VGG13 and VGG19 have each other's shapes
(AlexNet's "PD4" is high-low-high, its "PD5" low-high-low). We reproduce the tables as
published so results stay comparable with FlexiPrune's papers and code.
"""
from __future__ import annotations

import math
from fractions import Fraction

from pdsearch.errors import PdsearchError

TABLES: dict[str, dict[str, list[int]]] = {
    "alexnet": {
        "PD1": [50] * 5,
        "PD2": [34, 48, 56, 66, 76],
        "PD3": [70, 60, 44, 30, 18],
        "PD4": [68, 42, 28, 40, 70],
        "PD5": [32, 56, 76, 54, 32],
    },
    "vgg11": {
        "PD1": [50] * 8,
        "PD2": [20, 40, 46, 50, 58, 60, 68, 72],
        "PD3": [70, 66, 58, 58, 40, 40, 34, 24],
        "PD4": [20, 40, 60, 62, 62, 60, 18, 18],
        "PD5": [68, 52, 40, 40, 50, 52, 72, 72],
    },
    "vgg13": {
        "PD1": [50] * 10,
        "PD2": [26, 28, 38, 48, 58, 60, 78, 70, 70, 72],
        "PD3": [72, 70, 64, 60, 58, 50, 38, 28, 18, 10],
        "PD4": [70, 68, 60, 50, 28, 28, 46, 60, 68, 70],
        "PD5": [28, 38, 48, 58, 68, 66, 58, 46, 36, 28],
    },
    "vgg16": {
        "PD1": [50] * 13,
        "PD2": [20, 40, 46, 46, 50, 50, 50, 60, 60, 60, 68, 70, 70],
        "PD3": [70, 70, 62, 62, 50, 50, 50, 40, 40, 40, 34, 34, 32],
        "PD4": [30, 30, 48, 48, 60, 60, 60, 60, 60, 60, 30, 30, 30],
        "PD5": [66, 64, 50, 50, 40, 40, 40, 50, 50, 50, 64, 66, 66],
    },
    "vgg19": {
        "PD1": [50] * 16,
        "PD2": [36, 38, 42, 44, 46, 48, 48, 50, 54, 56, 58, 60, 64, 66, 68, 70],
        "PD3": [70, 68, 66, 64, 60, 54, 52, 50, 48, 44, 38, 36, 32, 30, 28, 24],
        "PD4": [70, 68, 58, 50, 48, 44, 38, 40, 44, 46, 48, 52, 58, 62, 66, 70],
        "PD5": [30, 38, 40, 44, 48, 50, 58, 60, 70, 62, 60, 50, 46, 38, 32, 26],
    },
}
ARCH_BY_CONV_COUNT = {len(t["PD1"]): arch for arch, t in TABLES.items()}


def architecture(kinds: list[str]) -> str:
    """FlexiPrune's architecture for a model's group kinds (convs in order, then 2 FC)."""
    n_conv = kinds.count("conv")
    if kinds != ["conv"] * n_conv + ["linear"] * 2 or n_conv not in ARCH_BY_CONV_COUNT:
        raise PdsearchError(
            "flexiprune mode covers AlexNet and VGG11/13/16/19 (5/8/10/13/16 convs then 2 hidden FC "
            f"layers); this model has {n_conv} conv and {kinds.count('linear')} hidden FC groups: use mode calibrated"
        )
    return ARCH_BY_CONV_COUNT[n_conv]


def flexiprune_rates(arch: str, pd: str, gpr: float) -> list[float]:
    """Per-layer rates (fractions): conv layers in order, then the two hidden FC layers."""
    g = Fraction(str(gpr))
    conv = [Fraction(math.floor(Fraction(t) * g / 50), 100) for t in TABLES[arch][pd]]
    rates = conv + [g / 100] * 2
    worst = max(range(len(conv)), key=lambda i: conv[i])
    if rates[worst] >= 1:
        raise PdsearchError(
            f"GPR {gpr:g} with {pd} on {arch} would prune {float(rates[worst]) * 100:.0f}% of conv layer "
            f"{worst + 1} (table value {TABLES[arch][pd][worst]}%): use a GPR below "
            f"{5000 / max(TABLES[arch][pd]):.1f}"
        )
    return [float(r) for r in rates]
