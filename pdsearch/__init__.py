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
    "latency_table": "pdsearch.cost.target",
    "Policy": "pdsearch.policy",
    "search": "pdsearch.searching.driver",
    "resume": "pdsearch.searching.driver",
    "report": "pdsearch.reporting.document",
    "select": "pdsearch.reporting.selection",
    "sensitivity": "pdsearch.reporting.profile_report",
    "dashboard": "pdsearch.reporting.dashboard",
    "list_models": "pdsearch.models",
}

__all__ = ["NoFeasiblePolicy", "PdsearchError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pdsearch' has no attribute {name!r}")
