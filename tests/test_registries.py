"""Every extension point is one entry: a plugin module (tests/registry_plugin.py) adds an allocator, an objective,
a sampler, a dataset, a scheduler, a criterion, a model and a latency runtime without touching pdsearch, and one search
uses them all."""
import json

import optuna
import pytest

import pdsearch
from pdsearch.errors import PdsearchError
from pdsearch.run.directory import load_run
from pdsearch.searching.driver import run_search

from configs import tiny_config

PLUGGED = dict(
    plugins=["registry_plugin"],
    model={"name": "plugin_net", "kwargs": {}},
    data={"dataset": "transposed_digits"},
    space={"gpr": {"low": 20, "high": 60, "step": 20}, "pd": ["shallow_first", 1], "criteria": ["linf"]},
    search={"sampler": "counting_qmc", "scheduler": "counting_fifo", "num_trials": 4,
            "objectives": ["accuracy", "flops", "screening", "latency"],
            "constraints": {"max_screening_drop": 60}},  # the plugin objective's constraint, as a built-in's
    latency={"runtime": "torch_twice", "warmup": 1, "runs": 3},
)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_one_search_uses_an_entry_added_to_every_registry(ray_session, tmp_path):
    cfg = tiny_config(**PLUGGED)
    import registry_plugin  # imported by the config's plugins: the driver's view of what ran here

    result = run_search(cfg, tmp_path)
    run = load_run(tmp_path)
    trials = run.trials
    assert len(trials) == 4 and (trials["status"] == "ok").all(), trials[["status", "failure_reason"]]
    assert set(trials["pd"]) <= {"shallow_first", "PD1"} and "shallow_first" in set(trials["pd"])
    assert set(trials["criterion"]) == {"linf"}
    assert set(trials["latency_runtime"]) == {"torch_twice"} and (trials["latency_ms"] > 0).all()
    assert run.model["name"] == "plugin_net" and run.model["in_channels"] == 1
    assert registry_plugin.CALLS["sampler"] >= 4 and registry_plugin.CALLS["scheduler"] >= 4
    study = optuna.load_study(study_name="pdsearch", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study.metric_names == ["accuracy", "flops", "screening", "latency"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    by_tune_id = {t.user_attrs["tune_trial_id"]: t for t in complete}
    for _, row in trials.iterrows():  # the plugin's objective is what the study was told
        assert by_tune_id[row["trial_id"]].values[2] == pytest.approx(row["accuracy_before_finetune"])
        # ... and its constraint: the miss Optuna's samplers and best_trials read
        assert by_tune_id[row["trial_id"]].constraints["screening_drop"] == pytest.approx(row["acc_drop"] - 60)
    assert len(result.front) >= 1
    # the shallow half of the network was pruned harder than the deep half
    shallow = trials[trials["pd"] == "shallow_first"].iloc[0]
    rates = json.loads(shallow["rates"])
    assert rates[0] > rates[-1]


def test_the_plugin_entries_plan_and_validate_like_built_in_ones():
    cfg = tiny_config(**PLUGGED)  # imports the plugin
    assert cfg.search.constraints.describe() == "screening drop <= 60 pts"
    with pytest.raises(PdsearchError, match=r"search.constraints.max_screening_drop: must lie in \[0, inf\), got -1"):
        tiny_config(**{**PLUGGED, "search": {**PLUGGED["search"], "constraints": {"max_screening_drop": -1}}})
    p = pdsearch.plan("resnet20", flops_reduction=40, pd="shallow_first", criterion="linf", input_size=32)
    assert abs(p.flops["reduction_pct"] - 40) < 1.0 and p.rates[0] > p.rates[-1]
    assert pdsearch.Planner("plugin_net", input_size=16, in_channels=1).structure.groups  # the model, by name
    with pytest.raises(PdsearchError, match=r"search.sampler: unknown sampler 'counting_qmx' \(did you mean counting_qmc\?\)"):
        tiny_config(**{**PLUGGED, "search": {**PLUGGED["search"], "sampler": "counting_qmx"}})
    with pytest.raises(PdsearchError, match="unknown scheduler 'lifo'"):
        tiny_config(**{**PLUGGED, "search": {**PLUGGED["search"], "scheduler": "lifo"}})
    with pytest.raises(PdsearchError, match="plugins: cannot import 'no_such_plugin'"):
        tiny_config(plugins=["no_such_plugin"])
