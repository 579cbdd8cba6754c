"""The Optuna/Tune glue: OptunaSearch that tells Optuna about failures, constraints and repeats."""
from __future__ import annotations

import json
import math
from typing import Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from pdsearch.config import SearchConfig
from pdsearch.recording import TUNE_FIELDS
from pdsearch.rundir import METRICS_ATTR
from pdsearch.space import SearchSpace


class PolicySearcher(OptunaSearch):
    """OptunaSearch that tells Optuna about failures and constraints before ``tell``.

    A failed trial (diverged, out of memory) is told as FAIL, never with placeholder
    values or NaN (which would leave the Optuna trial RUNNING for good). Constraints are
    set with Optuna's ``Trial.set_constraint``, which its samplers and ``best_trials`` read.
    """

    MAX_REDRAWS = 50

    def __init__(self, *args: Any, cfg: SearchConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cfg = cfg
        self._policies: dict[str, str] = {}  # policy key -> Tune trial id that runs it
        self._results: dict[str, tuple[list[float], dict[str, float]]] = {}  # policy key -> values, constraints
        self._resumed = False
        self._budget = SearchSpace(cfg).size()

    @staticmethod
    def _key(params: dict[str, Any]) -> str:
        return json.dumps(params, sort_keys=True)

    def suggest(self, trial_id: str) -> dict | None:
        """A policy not run yet: samplers over discrete spaces (GPR steps x PDs) repeat themselves.

        A repeat of a finished policy (trials are deterministic given policy and seed) is
        told to Optuna with the known result, so the sampler learns from it at no cost.
        """
        if len(self._policies) >= self._budget:  # after a resume, the study may hold more than Tune knows
            return Searcher.FINISHED
        for _ in range(self.MAX_REDRAWS):
            params = super().suggest(trial_id)
            key = self._key(params)
            if key not in self._policies:
                break
            ot_trial = self._ot_trials.pop(trial_id)
            ot_trial.set_user_attr("repeat_of", self._policies[key])
            if key in self._results:
                values, constraints = self._results[key]
                for name, value in constraints.items():
                    ot_trial.set_constraint(name, value)
                self._ot_study.tell(ot_trial, values)
            else:  # its twin is still running
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        self._policies.setdefault(self._key(params), trial_id)
        return params

    def _finished_in_study(self, ot_trial: optuna.trial.Trial) -> bool:
        """True for a trial told before the driver died but after Tune's last checkpoint."""
        if not self._resumed:
            return False
        return self._ot_study.get_trials(deepcopy=False)[ot_trial.number].state.is_finished()

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """After a driver crash, trust the study over the checkpoint, which may lag behind it.

        Policies the study has finished are known again (never rerun), and trials the
        dead driver had started but no restored Tune trial will finish are failed.
        """
        super().restore_from_dir(checkpoint_dir)
        self._resumed = True
        known = {t.number for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False):
            if "repeat_of" in frozen.user_attrs:
                continue
            key = self._key(frozen.params)
            if frozen.state == optuna.trial.TrialState.RUNNING and frozen.number not in known:
                self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
            elif frozen.state.is_finished() and "tune_trial_id" in frozen.user_attrs:
                self._policies[key] = frozen.user_attrs["tune_trial_id"]
                if frozen.state == optuna.trial.TrialState.COMPLETE:
                    self._results[key] = (list(frozen.values), frozen.constraints)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and self._finished_in_study(ot_trial):
            self._completed_trials.add(trial_id)  # its rerun after a resume: the study already has it
            return
        if ot_trial is not None and trial_id not in self._completed_trials:
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            if result:  # the study alone can rebuild trials.csv (rundir.trials_from_study)
                ot_trial.set_user_attr(METRICS_ATTR, {k: v for k, v in result.items() if k not in TUNE_FIELDS})
            ok = bool(result) and not error and result.get("status") == "ok" and all(
                math.isfinite(float(result[m])) for m in self.metric
            )
            if ok:
                constraints = self._cfg.search.constraints.violations(result)
                for name, value in constraints.items():
                    ot_trial.set_constraint(name, value)
                self._results[self._key(ot_trial.params)] = ([float(result[m]) for m in self.metric], constraints)
            else:
                reason = (result or {}).get("failure_reason") or "trial raised an error"
                ot_trial.set_user_attr("failure_reason", reason)
                result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)
