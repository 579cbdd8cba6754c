"""pdsearch: find the best pruning policy (global pruning rate x pruning distribution) for a CNN.

The public API mirrors the CLI's verbs. Names load lazily so ``import pdsearch`` and
``pdsearch --help`` stay fast (torch, Ray and Optuna load only when used).
"""
from __future__ import annotations

import importlib
from typing import Any

from pdsearch.errors import NoFeasiblePolicy, PdsearchError

_LAZY = {
    "Plan": "pdsearch.planning",
    "Planner": "pdsearch.planning",
    "plan": "pdsearch.planning",
    "plan_grid": "pdsearch.planning",
    "Policy": "pdsearch.policy",
    "search": "pdsearch.searching",
    "resume": "pdsearch.searching",
    "report": "pdsearch.reporting",
    "select": "pdsearch.selection",
    "sensitivity": "pdsearch.profiling",
    "dashboard": "pdsearch.dashboarding",
}

__all__ = ["NoFeasiblePolicy", "PdsearchError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pdsearch' has no attribute {name!r}")
