"""Trial schedulers (``search.scheduler``): which trials Ray Tune runs on, a light registry.

An entry names its Ray Tune scheduler by import path (built when the search starts) and
may check the config at the edge, so a scheduler that would have nothing to do is a
one-line error before Ray starts. Adding a scheduler is one line here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from pdsearch.config import SearchConfig


@dataclass(frozen=True)
class Scheduler:
    build: str  # import path of a function SearchConfig -> ray.tune.schedulers.TrialScheduler
    check: Optional[Callable[[SearchConfig], None]] = None  # raises ValueError for a config it cannot serve


def _rungs_below_budget(cfg: SearchConfig) -> None:
    if cfg.search.fidelity.min_epochs >= cfg.finetune.epochs:
        raise ValueError(f"search.fidelity.min_epochs ({cfg.search.fidelity.min_epochs}) leaves no rung below "
                         f"finetune.epochs ({cfg.finetune.epochs}): {cfg.search.scheduler} has nothing to stop early")


SCHEDULERS: dict[str, Scheduler] = {
    "fifo": Scheduler("pdsearch.searching.fifo:fifo"),
    "mo_asha": Scheduler("pdsearch.searching.mo_asha:mo_asha", check=_rungs_below_budget),
}
