"""trials.csv as trials end: a thin Ray Tune callback over the run directory's table."""
from __future__ import annotations

import datetime
from pathlib import Path

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

from pdsearch.run.directory import TRIALS_CSV, TrialTable
from pdsearch.trial.trial import RUNNING

TUNE_FIELDS = {*AUTO_RESULT_KEYS, *DEBUG_METRICS, "done"}  # what Tune adds to every result


class TrialRecorder(tune.Callback):
    """Appends a trial's row to trials.csv when it ends, so a partial or crashed run keeps its rows."""

    def __init__(self, run_dir: Path) -> None:
        self.table = TrialTable(run_dir / TRIALS_CSV)

    def _record(self, trial, status: str | None = None, reason: str = "") -> None:
        reported = {k: v for k, v in trial.last_result.items() if k not in TUNE_FIELDS}
        row = {"trial_id": trial.trial_id, **trial.config, **reported, "retries": trial.run_metadata.num_failures,
               "finished_at": datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")}
        if status:
            row.update(status=status, failure_reason=reason)
        self.table.append(row)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        stopped = trial.last_result.get("status") == RUNNING  # its last report was not its final one
        self._record(trial, status="stopped" if stopped else None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        local = Path(trial.error_file) if trial.error_file else None  # synced to storage only later
        error = local.read_text() if local and local.is_file() else trial.get_error()
        reason = str(error).strip().splitlines()[-1] if error else "trial raised an error"
        self._record(trial, status="error", reason=reason[:300])
