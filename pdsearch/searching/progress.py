"""What a search prints while it runs: a few lines per update, at 20 trials or 2,000.

A Ray Tune ``ProgressReporter`` that reads the run directory's trials.csv (which holds the
policies screened out on the driver too) and Tune's running trials: counts, the front's
size and hypervolume, the best policy under the constraints, elapsed time and an ETA.
Small sweeps also get one line per finished trial. ``quiet`` prints nothing (the CLI
prints the final summary); ``verbose`` is Tune's own table, with the space's columns.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
from ray import tune

from pdsearch.catalog.objectives import OBJECTIVES, reductions
from pdsearch.errors import PdsearchError
from pdsearch.registry import unknown
from pdsearch.run.directory import TRIALS_CSV, Run, load_run, status_counts
from pdsearch.run.front import hypervolume
from pdsearch.space import SearchSpace

PROGRESS = ("quiet", "normal", "verbose")


def trial_name(space: SearchSpace, trial: Any) -> str:
    """A Tune trial named by its policy: 'gpr40-PD2-l1' (Tune's default is '_trainable_906de94f')."""
    return space.policy(trial.config).name


def trial_dirname(space: SearchSpace, trial: Any) -> str:
    return f"{trial_name(space, trial)}_{trial.trial_id}"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class SweepProgress(tune.ProgressReporter):
    """A compact block every ``every`` seconds (and at the end), plus a line per finished trial up to
    ``lines_up_to`` trials in all."""

    def __init__(self, run_dir: Path, space: SearchSpace, model_info: dict[str, Any], every: float = 30.0,
                 lines_up_to: int = 50, out: TextIO | None = None) -> None:
        self.run_dir, self.cfg, self.base = Path(run_dir), space.cfg, model_info
        self.every, self.lines_up_to, self.out = every, lines_up_to, out
        self.space = space
        self.total = self.space.size()
        self.origin = self._start = self._last_block = time.time()  # origin: the clock printed, from the search's start
        self._seen: set[str] = set()
        self._finished_at_start = 0
        self._csv_stamp: int | None = None

    def __getstate__(self) -> dict[str, Any]:  # pickled with Tune's experiment state; sys.stdout is not picklable
        return {**self.__dict__, "out": None}

    def setup(self, start_time: float | None = None, total_samples: int | None = None, **kwargs: Any) -> None:
        self._start = self._last_block = start_time or time.time()  # this session's pace; first block after ``every`` s
        rows = self._rows(self._run())  # a resumed search: what finished before is not this session's pace, nor news
        self._finished_at_start, self._seen = len(rows), set(rows["trial_id"])

    def _run(self) -> Run | None:
        try:
            return load_run(self.run_dir, source="csv")
        except PdsearchError:  # no trial has finished yet
            return None

    @staticmethod
    def _rows(run: Run | None) -> pd.DataFrame:
        return run.trials if run is not None else pd.DataFrame(columns=["trial_id", "status"])

    def _csv_changed(self) -> bool:
        try:
            stamp = os.stat(self.run_dir / TRIALS_CSV).st_mtime_ns
        except FileNotFoundError:
            return False
        changed, self._csv_stamp = stamp != self._csv_stamp, stamp
        return changed

    def should_report(self, trials: list, done: bool = False) -> bool:
        due = done or time.time() - self._last_block >= self.every
        return due or (self.total <= self.lines_up_to and self._csv_changed())

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        run = self._run()
        rows = self._rows(run)
        lines = []
        if self.total <= self.lines_up_to:
            lines += [self.trial_line(row) for _, row in rows.iterrows() if row["trial_id"] not in self._seen]
        self._seen |= set(rows["trial_id"])
        now = time.time()
        if done or now - self._last_block >= self.every:
            lines += self.block(run, trials, now - self._start)
            self._last_block = now
        if lines:
            print("\n".join(lines), file=self.out or sys.stdout, flush=True)

    def _name(self, row: pd.Series) -> str:
        try:
            return self.space.policy_of_row(row).name
        except (KeyError, ValueError, PdsearchError):  # a row too incomplete to name: never stop the search for it
            return str(row["trial_id"])

    def trial_line(self, row: pd.Series) -> str:
        name, status = self._name(row), row["status"]
        if status not in ("ok", "stopped"):
            return f"  {status:<10} {name:<28} {str(row.get('failure_reason', ''))[:100]}"
        at = f" at epoch {int(row['epoch'])}" if status == "stopped" and pd.notna(row.get("epoch")) else ""
        took = f", {row['seconds']:.0f} s" if pd.notna(row.get("seconds")) else ""
        return f"  {status:<10} {name:<28} acc {row['accuracy']:6.2f} (drop {row['acc_drop']:+.2f}){at}, {reductions(row, self.cfg.search.objectives)}{took}"

    def block(self, run: Run | None, trials: list, elapsed: float) -> list[str]:
        rows = self._rows(run)
        finished = len(rows)
        running = sum(t.status == "RUNNING" for t in trials)
        done_now = finished - self._finished_at_start
        eta = _clock(elapsed / done_now * max(0, self.total - finished)) if done_now and finished < self.total else "-"
        head = (f"[{_clock(time.time() - self.origin)}] {self.cfg.name}: {finished}/{self.total} trials "
                f"({status_counts(rows)}), {running} running, ETA {eta}")
        if run is None or not len(run.completed):
            return [head, "  front: no completed trial yet"]
        front = run.front()
        hv = hypervolume(front, self.cfg.search.objectives, self.base)
        constraints = self.cfg.search.constraints.describe()
        if not len(front):
            return [head, f"  front: empty, no completed trial meets the constraints ({constraints}) yet"]
        best = front.loc[front["accuracy"].idxmax()]
        return [head, f"  front: {len(front)} policies, hypervolume {hv:.4f}",
                f"  best under the constraints ({constraints}): {self._name(best)}, acc {best['accuracy']:.2f} "
                f"(drop {best['acc_drop']:+.2f}), {reductions(best, self.cfg.search.objectives)}"]


def tune_reporter(space: SearchSpace, run_dir: Path, model_info: dict[str, Any], progress: str
                  ) -> tune.ProgressReporter:
    """The reporter for ``progress`` (quiet, normal or verbose)."""
    if progress not in PROGRESS:
        raise PdsearchError(unknown("progress", progress, PROGRESS))
    cfg = space.cfg
    if progress == "verbose":
        options = [name for settings in space.options.values() for name in settings]
        return tune.CLIReporter(
            parameter_columns=[*space.fixed, *options],
            metric_columns={"status": "result", "epoch": "epoch", "accuracy": "val acc", "acc_drop": "drop",
                            **{OBJECTIVES[o].constraint.metric: OBJECTIVES[o].constraint.label
                               for o in cfg.search.objectives if not OBJECTIVES[o].constraint.evolves}},
            max_report_frequency=20, print_intermediate_tables=True,
        )
    if progress == "quiet":
        return Silent()
    return SweepProgress(run_dir, space, model_info)


class StartProgress:
    """What a search prints before its first trial: the baseline's epochs, the sensitivity profile's groups.

    Reports come from the Ray task that does the work (``{stage, unit, done, total}``, the
    baseline's with its validation accuracy): a line on the first and the last of a stage
    and at most one every ``gap`` seconds between, and at least one every ``heartbeat``
    seconds while a stage runs, so minutes never pass in silence.
    """

    def __init__(self, name: str, out: TextIO | None = None, gap: float = 5.0, heartbeat: float = 30.0,
                 origin: float | None = None) -> None:
        self.name, self.out, self.gap, self.heartbeat = name, out, gap, heartbeat
        self._start = origin or time.time()  # the search's start: the trials' progress counts from it too
        self._stage_start: dict[str, float] = {}
        self._last: dict[str, Any] | None = None
        self._printed_at = 0.0

    def update(self, report: dict[str, Any]) -> None:
        now = time.time()
        first = report["stage"] not in self._stage_start
        self._stage_start.setdefault(report["stage"], now)
        self._last = report
        if first or report["done"] == report["total"] or now - self._printed_at >= self.gap:
            self._print(report, now)

    def tick(self) -> None:
        """Called while waiting: repeats the last line (with its time and ETA) once a heartbeat has passed."""
        now = time.time()
        if self._last is not None and self._last["done"] < self._last["total"] and now - self._printed_at >= self.heartbeat:
            self._print(self._last, now)

    def _print(self, r: dict[str, Any], now: float) -> None:
        spent = now - self._stage_start[r["stage"]]
        eta = _clock(spent / r["done"] * (r["total"] - r["done"])) if r["done"] else "-"
        acc = f", val {r['val_accuracy']:.2f}%" if r.get("val_accuracy") is not None else ""
        tail = f"done in {spent:.0f} s" if r["done"] == r["total"] else f"ETA {eta}"
        print(f"[{_clock(now - self._start)}] {self.name}: {r['stage']}, {r['unit']} {r['done']}/{r['total']}{acc}, "
              f"{tail}", file=self.out or sys.stdout, flush=True)
        self._printed_at = now


class Silent(tune.ProgressReporter):
    """--quiet: nothing while the search runs (the CLI prints the final summary)."""

    def should_report(self, trials: list, done: bool = False) -> bool:
        return False
