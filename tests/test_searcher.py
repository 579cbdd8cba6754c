"""The Optuna/Tune searcher: what Optuna is told about failures, constraints, repeats and unbuildable policies,
and what it does while the study database is away."""
import signal
import time

import optuna
import pandas as pd
import sqlalchemy.exc
from ray.tune.search import Searcher

from pdsearch.searching.outage import OUTAGE
from pdsearch.searching.searcher import PolicySearcher
from pdsearch.space import SearchSpace

from configs import tiny_config

TINY_MODEL = {"name": "small_cnn", "input_size": 8, "in_channels": 1, "num_classes": 10, "flops": 1e5, "params": 1e4}


def make_searcher(cfg, run_dir):
    return PolicySearcher(space=SearchSpace(cfg), metric=["accuracy", "flops", "params"], mode=["max", "min", "min"],
                          sampler=optuna.samplers.RandomSampler(seed=0), model_info=TINY_MODEL,
                          run_dir=run_dir)


def result(status="ok", acc=95.0, drop=1.0, red=50.0):
    return {"status": status, "accuracy": acc, "flops": 100.0, "params": 10.0, "acc_drop": drop,
            "flops_reduction_pct": red, "params_reduction_pct": red, "failure_reason": "" if status == "ok" else "diverged: nan"}


def test_searcher_tells_failures_as_fail_and_sets_constraints(tmp_path):
    cfg = tiny_config(search={"constraints": {"max_acc_drop": 2.0, "min_flops_reduction": 40}})
    searcher = make_searcher(cfg, tmp_path)
    for tid in ("a", "b", "c", "d"):
        searcher.suggest(tid)
    searcher.on_trial_complete("a", result())
    searcher.on_trial_complete("b", result(status="failed", acc=0.0))
    searcher.on_trial_complete("c", {**result(), "accuracy": float("nan")})
    searcher.on_trial_complete("d", result(drop=5.0))
    trials = {t.user_attrs["tune_trial_id"]: t for t in searcher._ot_study.trials if "tune_trial_id" in t.user_attrs}
    states = {k: t.state for k, t in trials.items()}
    assert states == {"a": optuna.trial.TrialState.COMPLETE, "b": optuna.trial.TrialState.FAIL,
                      "c": optuna.trial.TrialState.FAIL, "d": optuna.trial.TrialState.COMPLETE}
    assert trials["b"].user_attrs["failure_reason"] == "diverged: nan"
    assert trials["a"].constraints == {"acc_drop": -1.0, "flops_reduction": -10.0}
    assert [t.user_attrs["tune_trial_id"] for t in searcher._ot_study.best_trials] == ["a"]  # d is infeasible


def test_searcher_does_not_rerun_a_policy(tmp_path):
    cfg = tiny_config(space={"gpr": {"values": [20]}, "pd": [1, 2]})
    searcher = make_searcher(cfg, tmp_path)
    first = searcher.suggest("t1")
    searcher.on_trial_complete("t1", result())
    second = searcher.suggest("t2")
    assert second != first  # only two policies exist: a repeat of the first is redrawn
    searcher.on_trial_complete("t2", result(acc=90.0))
    searcher.suggest("t3")  # space exhausted: repeats are told their known results, then accepted
    repeats = [t for t in searcher._ot_study.trials if "repeat_of" in t.user_attrs]
    assert repeats and all(t.values in ([95.0, 100.0, 10.0], [90.0, 100.0, 10.0]) for t in repeats)


def test_unbuildable_policies_are_told_infeasible_and_recorded_never_run(tmp_path):
    # GPR 85 with slopes of 2-3 cannot match homogeneous pruning under a 90% cap; GPR 10 can
    cfg = tiny_config(space={"pd": None, "gpr": {"values": [10, 85]},
                             "shape": {"slope": {"low": 2.0, "high": 3.0}, "curvature": {"low": 0.0, "high": 0.0}}})
    searcher = make_searcher(cfg, tmp_path)
    suggested = [searcher.suggest(f"t{i}") for i in range(4)]
    assert all(p["gpr"] == 10 for p in suggested)  # only buildable policies reach Tune
    table = pd.read_csv(tmp_path / "trials.csv")
    assert len(table) >= 1 and set(table["status"]) == {"infeasible"} and (table["gpr"] == 85).all()
    assert table["failure_reason"].str.contains("cannot match").all()
    told = [t for t in searcher._ot_study.trials if "infeasible" in t.user_attrs]
    assert len(told) == len(table)
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.constraints == {"buildable": 100.0} for t in told)


class FlakyStorage:
    """A storage whose every call fails while ``down``, as a database server that went away."""

    def __init__(self, storage) -> None:
        self.storage, self.down = storage, False
        self.down_after = ""  # a call after which it goes away (its own commit went through)

    def __getattr__(self, name):
        attr = getattr(self.storage, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise sqlalchemy.exc.OperationalError("UPDATE trials ...", {}, Exception("server closed the connection"))
            self.down = name == self.down_after
            return attr(*args, **kwargs)
        return call


def test_an_outage_keeps_results_proposes_nothing_and_writes_them_in_order_when_the_study_is_back(tmp_path, capsys):
    searcher = make_searcher(tiny_config(space={"gpr": {"values": [20, 30, 40, 50]}, "pd": [1, 2]}), tmp_path)
    OUTAGE.reset(600)
    for tid in ("a", "b", "c"):
        searcher.suggest(tid)
    flaky = FlakyStorage(searcher._ot_study._storage)
    searcher._ot_study._storage = flaky
    flaky.down = True
    searcher.on_trial_complete("a", result(acc=91.0))
    searcher.on_trial_complete("b", result(acc=92.0))
    assert searcher.suggest("d") is None and searcher.suggest("e") is None  # nothing new while it is away
    flaky.down = False
    assert searcher.suggest("f") is not None  # the two results first, then a policy
    searcher.on_trial_complete("c", result(acc=93.0))
    done = sorted((t for t in searcher._ot_study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                  key=lambda t: t.datetime_complete)
    assert [(t.user_attrs["tune_trial_id"], t.values[0]) for t in done] == [("a", 91.0), ("b", 92.0), ("c", 93.0)]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "study database unreachable since" in err[0] and "trials go on" in err[0]
    assert "study database reconnected after" in err[1] and "2 results written late" in err[1]


def test_a_trial_the_outage_left_half_asked_is_failed_once_the_study_is_back(tmp_path):
    """The database went away between creating a trial and writing its policy: no Tune trial will finish it."""
    searcher = make_searcher(tiny_config(), tmp_path)
    OUTAGE.reset(600)
    flaky = FlakyStorage(searcher._ot_study._storage)
    searcher._ot_study._storage, flaky.down_after = flaky, "create_new_trial"
    assert searcher.suggest("a") is None and OUTAGE.since is not None
    flaky.down, flaky.down_after = False, ""
    assert searcher.suggest("b") is not None
    searcher.on_trial_complete("b", result())
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]


def test_an_outage_past_the_timeout_stops_the_search_as_an_interrupt_does(tmp_path, capsys):
    searcher = make_searcher(tiny_config(), tmp_path)
    searcher.suggest("a")
    flaky = FlakyStorage(searcher._ot_study._storage)
    searcher._ot_study._storage, flaky.down = flaky, True
    stops = []
    previous = signal.signal(signal.SIGUSR1, lambda *a: stops.append("tune stops gracefully"))  # as Tune's handler
    try:
        OUTAGE.reset(0.05)
        searcher.on_trial_complete("a", result())
        assert not stops and not OUTAGE.expired
        time.sleep(0.1)
        assert searcher.suggest("b") == Searcher.FINISHED  # Tune waiting for a policy stops waiting
        assert stops == ["tune stops gracefully"] and OUTAGE.expired
        assert searcher.suggest("c") == Searcher.FINISHED and len(stops) == 1  # signalled once
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert searcher._pending and searcher._pending[0][0] == "a"  # kept, pickled with the searcher for resume
    assert "storage_timeout" in capsys.readouterr().err


def test_every_registered_sampler_survives_tunes_pickling_mid_study(tmp_path):
    """Tune pickles the searcher (its study and sampler) when the Tuner starts and at each checkpoint."""
    import pickle

    from pdsearch.catalog.samplers import SAMPLERS

    for name in SAMPLERS:
        cfg = tiny_config(search={"sampler": name, "num_trials": 6, "population_size": 2})
        searcher = PolicySearcher(space=SearchSpace(cfg), metric=["accuracy", "flops", "params"],
                                  mode=["max", "min", "min"], sampler=SearchSpace(cfg).sampler(),
                                  model_info=TINY_MODEL, run_dir=tmp_path / name)
        for i in range(3):
            assert searcher.suggest(f"t{i}") is not None
            searcher.on_trial_complete(f"t{i}", result(acc=90.0 + i))
        restored = pickle.loads(pickle.dumps(searcher))
        assert restored.suggest("t3") is not None, name
