"""FIFO scheduling (``search.scheduler: fifo``), the default: every trial runs its whole fine-tune."""
from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

from pdsearch.config import SearchConfig


class NewestFirstFIFO(FIFOScheduler):
    """FIFO that looks for a pending trial from the newest end of Tune's trial list.

    The searcher creates trials just in time, so pending trials are the newest; Tune's
    FIFO scans from the oldest, over every finished trial, on every step: a cost that
    grows with the trials so far (benchmarks/engine_scale.py).
    """

    def choose_trial_to_run(self, tune_controller):
        trials = tune_controller.get_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            for trial in reversed(trials):
                if trial.status == status:
                    return trial
        return None


def fifo(cfg: SearchConfig) -> NewestFirstFIFO:
    return NewestFirstFIFO()
