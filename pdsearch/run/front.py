"""The Pareto front of a run's trials and its hypervolume: what reports, progress and selection rank by."""
from __future__ import annotations

import numpy as np
import optuna
import pandas as pd

from pdsearch.catalog.objectives import OBJECTIVES, Base
from pdsearch.config import Constraints


def pareto_front(trials: pd.DataFrame, objectives: list[str], constraints: Constraints | None = None) -> pd.DataFrame:
    """Rows that Optuna's ``best_trials`` keeps: feasible and not dominated, sorted by FLOPs."""
    if not len(trials):
        return trials.iloc[0:0]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=[OBJECTIVES[o].optuna_direction for o in objectives])
    study.add_trials([
        optuna.trial.create_trial(
            values=[float(row[OBJECTIVES[o].metric]) for o in objectives], user_attrs={"row": i},
            constraints=(constraints.violations(row) if constraints else None) or None,
        )
        for i, row in trials.iterrows()
    ])
    rows = [t.user_attrs["row"] for t in study.best_trials]
    return trials.loc[rows].sort_values(["flops", "accuracy"], ascending=[True, False])


def hypervolume(front: pd.DataFrame, objectives: list[str], base: Base) -> float:
    """Hypervolume of ``front``, each objective as a loss in [0, 1] (objectives.OBJECTIVES[...].loss).

    Accuracy becomes 1 - accuracy/100, FLOPs and params a fraction of the baseline's,
    measured latency its ratio to the baseline's, so the reference point (1, ..., 1) is a
    0 %-accurate model that costs as much as the baseline, and a perfect, free model scores 1.
    ``base`` is model.json: each objective reads the baseline's value it needs from it.
    """
    if not len(front):
        return 0.0
    losses = np.array([[OBJECTIVES[o].loss(float(row[OBJECTIVES[o].metric]), base) for o in objectives]
                       for _, row in front.iterrows()])
    losses = losses[(losses < 1.0).all(axis=1)]  # points beyond the reference add nothing
    if not len(losses):
        return 0.0
    # Optuna's exact WFG implementation (the module is private but stable since Optuna 3).
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(losses, np.ones(len(objectives))))

