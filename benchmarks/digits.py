"""The trial setting the allocator, loss-aware and distillation benchmarks share: digits at 16×16, a 15-epoch baseline."""
import argparse
from typing import Any

import torch

from pdsearch.config import SearchConfig, parse_config


def parse_digits_args(parser: argparse.ArgumentParser, budgets: str = "50,70,85"
                      ) -> tuple[argparse.Namespace, list[float]]:
    """The script's arguments plus --models and --budgets (FLOPs, %); torch on one thread, as a trial with
    ``resources.cpu: 1`` gets."""
    parser.add_argument("--models", default="small_cnn,resnet20")
    parser.add_argument("--budgets", default=budgets)
    args = parser.parse_args()
    torch.set_num_threads(1)
    return args, [float(b) for b in args.budgets.split(",")]


def digits_config(name: str, model: str, budgets: list[float], pds: list[str],
                  allocators: dict[str, Any] | None = None, **finetune: Any) -> SearchConfig:
    """A search config at FLOPs budgets ``budgets`` over ``pds``; ``finetune`` overrides the 3-epoch fine-tune,
    ``allocators`` the allocators' settings (space.allocators)."""
    return parse_config({
        "name": name, "data": {"dataset": "digits", "input_size": 16},
        "model": {"name": model}, "baseline": {"epochs": 15, "lr": 0.05},
        "finetune": {"epochs": 3, "lr": 0.02, **finetune},
        "space": {"budget": {"flops_reduction": {"values": budgets}}, "pd": pds, "allocators": allocators or {}},
    })
