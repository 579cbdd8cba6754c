"""trials.csv as trials end: a thin Ray Tune callback over the run directory's table."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

from pdsearch.rundir import TRIALS_CSV, ordered

TUNE_FIELDS = {*AUTO_RESULT_KEYS, *DEBUG_METRICS, "done"}  # what Tune adds to every result


class TrialRecorder(tune.Callback):
    """Rewrites trials.csv whenever a trial ends, so a partial or crashed run keeps its rows."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / TRIALS_CSV
        self.rows: dict[str, dict[str, Any]] = {}

    def setup(self, **info) -> None:
        """On resume the rows so far come from trials.csv; a rerun trial replaces its row."""
        if self.path.is_file():
            earlier = pd.read_csv(self.path, keep_default_na=False, dtype={"trial_id": str})
            self.rows = {row["trial_id"]: row for row in earlier.to_dict("records")}

    def _record(self, trial, status: str | None = None, reason: str = "") -> None:
        reported = {k: v for k, v in trial.last_result.items() if k not in TUNE_FIELDS}
        row = {"trial_id": trial.trial_id, **trial.config, **reported, "retries": trial.run_metadata.num_failures}
        if status:
            row.update(status=status, failure_reason=reason)
        self.rows[trial.trial_id] = row
        frame = ordered(pd.DataFrame(list(self.rows.values())))
        tmp = self.path.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, self.path)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        local = Path(trial.error_file) if trial.error_file else None  # synced to storage only later
        error = local.read_text() if local and local.is_file() else trial.get_error()
        reason = str(error).strip().splitlines()[-1] if error else "trial raised an error"
        self._record(trial, status="error", reason=reason[:300])
