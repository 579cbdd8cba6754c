"""Optuna's NSGA-II, picklable again.

Optuna 5.1 gave its genetic samplers a ``threading.Lock``, which pickle cannot take; Ray
Tune pickles the searcher (the study and its sampler) when a Tuner starts and at every
checkpoint. The lock guards a cache within one process, so a restored sampler gets a new one.
"""
from __future__ import annotations

import threading
from typing import Any

import optuna


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()  # unused by an Optuna without it
