"""The trial setting the allocator, loss-aware and distillation benchmarks share: digits at 16×16, a 15-epoch baseline."""
from typing import Any

from pdsearch.config import SearchConfig, parse_config


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
