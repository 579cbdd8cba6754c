"""The Optuna/Tune glue: OptunaSearch that tells Optuna about failures, constraints, repeats and
policies that cannot be built, and rides through the study database going away (outage.py)."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from pdsearch.catalog.objectives import OBJECTIVES
from pdsearch.errors import PdsearchError
from pdsearch.planning import Planner
from pdsearch.policy import SensitivityProfile
from pdsearch.run.directory import INFEASIBLE_ATTR, LATENCY_TABLE, METRICS_ATTR, TRIALS_CSV, TrialTable, name_objectives
from pdsearch.searching.outage import DB_ERRORS, OUTAGE
from pdsearch.searching.recording import TUNE_FIELDS
from pdsearch.space import SearchSpace, policy_fields
from pdsearch.trial.trial import RUNNING

logger = logging.getLogger(__name__)
UNBUILDABLE = 100.0  # the constraint violation of a policy that cannot be built: worse than any measured miss


class PolicySearcher(OptunaSearch):
    """OptunaSearch that tells Optuna about failures and constraints before ``tell``.

    A failed trial (diverged, out of memory) is told as FAIL, never with placeholder
    values or NaN (which would leave the Optuna trial RUNNING for good); one a scheduler
    stopped at a rung is told as PRUNED. Constraints are set with Optuna's
    ``Trial.set_constraint``, which its samplers and ``best_trials`` read. A policy that
    cannot be built is found here, on the driver, and never reaches a worker.
    """

    MAX_REDRAWS = 50

    def __init__(self, space: SearchSpace, *args: Any, model_info: dict[str, Any], run_dir: Path,
                 profile: SensitivityProfile | None = None, **kwargs: Any) -> None:
        super().__init__(space, *args, **kwargs)
        self._cfg = cfg = space.cfg
        name_objectives(self._ot_study, cfg)
        self._search_space = space
        self._model_info = model_info
        self._profile = profile
        self._table = TrialTable(Path(run_dir) / TRIALS_CSV)
        self._policies: dict[str, str] = {}  # policy key -> Tune trial id that runs it
        self._results: dict[str, tuple[list[float], dict[str, float]]] = {}  # policy key -> values, constraints
        self._finished_before_resume: set[int] = set()
        self._budget = self._search_space.size()
        self._planner: Planner | None = None  # built on first use; never pickled with Tune's state

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_planner"}

    def save(self, checkpoint_path: str) -> None:
        planner, self._planner = self._planner, None
        try:
            super().save(checkpoint_path)
        finally:
            self._planner = planner

    def _unbuildable(self, params: dict[str, Any]) -> str:
        """Why this policy cannot be built ('' if it can): planned on the driver, in milliseconds.

        Shapes and tables are planned in full (sensitivity too, with the profile); an
        allocator that measures inside the trial is checked for a reachable budget.
        """
        if getattr(self, "_planner", None) is None:
            table = self._table.path.parent / LATENCY_TABLE
            self._planner = Planner.from_info(self._cfg.model.name, self._model_info, self._cfg.model.kwargs,
                                              latency_table=str(table) if table.is_file() else None)
        try:
            self._planner.check(self._search_space.policy(params), settings=self._cfg.space.settings(),
                                profile=self._profile)
        except PdsearchError as exc:
            return str(exc)
        return ""

    def _tell_unbuildable(self, ot_trial: optuna.trial.Trial, params: dict[str, Any], reason: str) -> None:
        """Told as a complete but infeasible trial, so samplers learn the boundary; recorded, never run."""
        ot_trial.set_user_attr(INFEASIBLE_ATTR, reason)
        ot_trial.set_constraint("buildable", UNBUILDABLE)
        self._ot_study.tell(ot_trial, [OBJECTIVES[o].worst(self._model_info) for o in self._cfg.search.objectives])
        row = {"trial_id": f"infeasible-{ot_trial.number}", "status": "infeasible", "failure_reason": reason[:300],
               **params, **policy_fields(self._search_space.policy(params))}
        self._table.append(row)

    @staticmethod
    def _key(params: dict[str, Any]) -> str:
        return json.dumps(params, sort_keys=True)

    def suggest(self, trial_id: str) -> dict | None:
        """A policy not run yet; None (Tune asks again later) while the study database is unreachable, and
        FINISHED once it stayed away past search.storage_timeout (the search stops, to be resumed)."""
        try:
            if not self._write_pending():
                return Searcher.FINISHED if OUTAGE.expired else None
            self._fail_orphans()
            params = self._suggest(trial_id)
        except DB_ERRORS:
            self._ot_trials.pop(trial_id, None)
            self._orphans = True  # an ask or a tell the connection broke may have left a trial RUNNING
            OUTAGE.failed()
            return Searcher.FINISHED if OUTAGE.expired else None
        OUTAGE.recovered()
        return params

    def _fail_orphans(self) -> None:
        """Fail the study's trials that a broken ask or tell left RUNNING with no Tune trial to finish them
        (a trial created before the connection broke, or a repeat popped before its tell went through)."""
        if not self.__dict__.get("_orphans"):
            return
        known = {t.number for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.number not in known:
                self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        self._orphans = False

    def _suggest(self, trial_id: str) -> dict | None:
        """Samplers over discrete spaces (GPR steps x PDs) repeat themselves: a repeat of a finished policy
        (trials are deterministic given policy and seed) is told to Optuna with the known result, so the
        sampler learns from it at no cost.
        """
        if len(self._policies) >= self._budget:  # after a resume, the study may hold more than Tune knows
            return Searcher.FINISHED
        reason = ""
        for _ in range(self.MAX_REDRAWS):
            params = super().suggest(trial_id)
            key = self._key(params)
            if key in self._policies:
                self._tell_repeat(self._ot_trials.pop(trial_id), key)
                continue
            reason = self._unbuildable(params)
            if not reason:
                break
            self._tell_unbuildable(self._ot_trials.pop(trial_id), params, reason)
        else:
            if reason:  # draw after draw cannot be built: the space is the problem
                logger.warning("the last %d policies drawn could not be built; ending the search", self.MAX_REDRAWS)
                return Searcher.FINISHED
            params = super().suggest(trial_id)  # space exhausted: run a repeat rather than nothing
        self._policies.setdefault(self._key(params), trial_id)
        return params

    def _tell_repeat(self, ot_trial: optuna.trial.Trial, key: str) -> None:
        """A repeat of a finished policy is told its known result, so the sampler learns at no cost."""
        ot_trial.set_user_attr("repeat_of", self._policies[key])
        if key in self._results:
            values, constraints = self._results[key]
            for name, value in constraints.items():
                ot_trial.set_constraint(name, value)
            self._ot_study.tell(ot_trial, values)
        else:  # its twin is still running
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)

    def _finished_in_study(self, ot_trial: optuna.trial.Trial) -> bool:
        """True for a trial told before the driver died but after Tune's last checkpoint."""
        return ot_trial.number in self._finished_before_resume

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """After a driver crash, trust the study over the checkpoint, which may lag behind it.

        Policies the study has finished are known again (never rerun), and trials the
        dead driver had started but no restored Tune trial will finish are failed.
        """
        super().restore_from_dir(checkpoint_dir)
        known = {t.number for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False):
            if frozen.state.is_finished():
                self._finished_before_resume.add(frozen.number)
            if "repeat_of" in frozen.user_attrs or INFEASIBLE_ATTR in frozen.user_attrs:
                continue
            key = self._key(frozen.params)
            if frozen.state == optuna.trial.TrialState.RUNNING and frozen.number not in known:
                self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
            elif frozen.state.is_finished() and "tune_trial_id" in frozen.user_attrs:
                self._policies[key] = frozen.user_attrs["tune_trial_id"]
                if frozen.state == optuna.trial.TrialState.COMPLETE:
                    self._results[key] = (list(frozen.values), frozen.constraints)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Told to the study now, or, while its database is unreachable, once it is back (in order)."""
        self._pending.append((trial_id, result, error))
        if not self._write_pending():
            OUTAGE.late += 1

    @property
    def _pending(self) -> list[tuple[str, dict | None, bool]]:
        if "_unwritten" not in self.__dict__:  # (a searcher saved before there was a queue)
            self._unwritten: list[tuple[str, dict | None, bool]] = []
        return self._unwritten

    def _write_pending(self) -> bool:
        """Write the results the study has not taken yet, oldest first; False while it cannot take them."""
        if not self._pending:
            return True
        while self._pending:
            try:
                self._complete(*self._pending[0])
            except DB_ERRORS:
                OUTAGE.failed()
                return False
            self._pending.pop(0)
        OUTAGE.recovered()
        return True

    def _complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and self._finished_in_study(ot_trial):
            self._completed_trials.add(trial_id)  # its rerun after a resume: the study already has it
            return
        if ot_trial is not None and trial_id not in self._completed_trials:
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            if result:  # the study alone can rebuild trials.csv (run.directory.trials_from_study)
                ot_trial.set_user_attr(METRICS_ATTR, {k: v for k, v in result.items() if k not in TUNE_FIELDS})
            ok = bool(result) and not error and result.get("status") == "ok" and all(
                math.isfinite(float(result[m])) for m in self.metric
            )
            if result and not error and result.get("status") == RUNNING:
                # stopped at a rung: its full-budget values are unknown, so the front never holds it
                result = None
            elif ok:
                constraints = self._cfg.search.constraints.violations(result)
                for name, value in constraints.items():
                    ot_trial.set_constraint(name, value)
                self._results[self._key(ot_trial.params)] = ([float(result[m]) for m in self.metric], constraints)
            else:
                reason = (result or {}).get("failure_reason") or "trial raised an error"
                ot_trial.set_user_attr("failure_reason", reason)
                result, error = None, True
            # OptunaSearch.on_trial_complete without its catch-all, which would drop a write the database refused;
            # skip_if_finished: a retried tell whose first commit went through before the connection broke
            values = [float(result[m]) for m in self.metric] if result else None
            state = optuna.trial.TrialState.COMPLETE if values else (
                optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED)
            try:
                self._ot_study.tell(ot_trial, values, state=state, skip_if_finished=True)
            except DB_ERRORS:
                raise
            except Exception as exc:  # as OptunaSearch does: GridSampler calls study.stop() once its grid is done
                logger.warning("the study took trial %s with a complaint: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
