"""The study database going away: one line when it does, one when it is back, a clean stop when it stays away.

Trials do not need the study while they run: only the driver's searcher does, to ask for
a policy and to tell a result. So while the database is unreachable the searcher keeps
results it could not write (written on reconnection, in order) and proposes nothing new,
and running trials go on. After ``search.storage_timeout`` seconds the search stops as an
interrupt does (Ray Tune's graceful stop: the experiment and the searcher, with the results
that wait, are saved; running trials rerun on resume), and the driver exits with
STORAGE_EXIT so a script can tell it from a crash.
"""
from __future__ import annotations

import datetime
import signal
import sys
import time
from pathlib import Path

import optuna
import sqlalchemy.exc
from ray import cloudpickle, tune

from pdsearch.errors import Interrupted

DB_ERRORS = (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError)  # connection lost, commit failed
STORAGE_EXIT = 75  # EX_TEMPFAIL: the study database stayed away; `pdsearch resume` once it is back


class StudyUnreachable(Interrupted):
    """The study database stayed unreachable past search.storage_timeout; the run can be resumed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0)
        self.exit_code = STORAGE_EXIT


def _say(text: str) -> None:
    print(f"pdsearch: {text}", file=sys.stderr, flush=True)


class Outage:
    """Whether the study database is reachable, as the driver's searcher last found it."""

    def __init__(self) -> None:
        self.reset(600.0)

    def reset(self, timeout: float) -> None:
        self.timeout, self.since, self.stopped_at = float(timeout), None, None
        self.late = 0  # results that could not be written when they came

    @property
    def expired(self) -> bool:
        return self.stopped_at is not None

    def failed(self) -> None:
        """A call to the study failed."""
        if self.since is None:
            self.since = time.time()
            clock = datetime.datetime.fromtimestamp(self.since).strftime("%H:%M:%S")
            _say(f"study database unreachable since {clock}; retrying, trials go on")
        self.check()

    def recovered(self) -> None:
        """A call to the study went through (once it is back, the results that waited have been written)."""
        if self.since is not None and not self.expired:
            _say(f"study database reconnected after {time.time() - self.since:.0f} s; "
                 f"{self.late} results written late")
            self.since, self.late = None, 0

    def check(self) -> None:
        """Past the timeout, stop the search as an interrupt does: Ray Tune's graceful stop, which saves the
        experiment (running trials rerun on resume). The searcher then proposes no more (``expired``): Tune
        waiting for a policy with nothing running sees the signal only once its wait ends."""
        if self.since is None or self.expired or time.time() - self.since < self.timeout:
            return
        self.stopped_at = time.time()
        _say(f"study database unreachable for {self.timeout:g} s (search.storage_timeout): stopping the search")
        if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's handler, while it runs
            signal.raise_signal(signal.SIGUSR1)


def reopen_search(experiment: Path) -> None:
    """Let a resumed search propose policies again.

    A search the outage stopped told Tune it was finished (the one way out of Tune's wait
    for a policy), and Tune saved that. The searcher says again when the search is done.
    """
    for path in experiment.glob("search_gen_state-*.json"):  # (a pickle, whatever its name says)
        state = cloudpickle.loads(path.read_bytes())
        if isinstance(state, dict) and state.get("finished"):
            state["finished"] = False
            path.write_bytes(cloudpickle.dumps(state))


OUTAGE = Outage()  # this driver's


class OutageWatch(tune.Callback):
    """Checks the timeout at every step of Tune's loop, even when no result comes to touch the study."""

    def on_step_begin(self, iteration, trials, **info) -> None:
        OUTAGE.check()
