"""What ``search()`` and ``resume()`` return: the run read back once the search has ended."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pdsearch.run.directory import PARETO_CSV, STATUSES, load_run, written
from pdsearch.run.front import hypervolume


@dataclass
class SearchResult:
    run_dir: Path
    trials: pd.DataFrame  # trials.csv, one row per finished or infeasible trial
    front: pd.DataFrame  # the feasible Pareto front (pareto.csv)
    counts: dict[str, int]  # trials by status: ok, stopped, failed, infeasible
    hypervolume: float  # of the front, each objective a loss in [0, 1] (run.front.hypervolume)
    baseline: dict[str, Any]  # the baseline's accuracy and training record (no weights)
    written: list[str]  # what the run directory holds
    seconds: float | None = None  # the search's wall-clock time, where it ran in this process


def summarize(run_dir: Path, baseline: dict[str, Any], seconds: float | None = None) -> SearchResult:
    """The run's trials and front; writes pareto.csv. ``baseline``: its record (baseline.json)."""
    run = load_run(run_dir)
    front = run.front().reset_index(drop=True)
    front.to_csv(run_dir / PARETO_CSV, index=False)
    statuses = run.trials["status"].replace({"error": "failed"}) if len(run.trials) else pd.Series(dtype=str)
    return SearchResult(
        run_dir=Path(run_dir), trials=run.trials, front=front,
        counts={status: int((statuses == status).sum()) for status in STATUSES},
        hypervolume=hypervolume(front, run.cfg.search.objectives, run.model),
        baseline=baseline, written=written(run.cfg, run_dir),
        seconds=seconds,
    )
