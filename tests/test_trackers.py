"""Experiment trackers through Ray Tune's callbacks: one run per trial with its policy and metrics, the front as artifacts."""
import pytest

from pdsearch.searching.driver import run_search

from configs import tiny_config

mlflow = pytest.importorskip("mlflow")  # the [test] extra installs it; CI runs this


@pytest.mark.slow
def test_mlflow_gets_a_run_per_trial_under_a_parent_holding_the_front(ray_session, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(search={"num_trials": 3, "trackers": ["mlflow"]})  # the run directory's own store
    result = run_search(cfg, tmp_path / "run", progress="quiet")
    uri = f"sqlite:///{tmp_path}/run/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("pdsearch.run_dir") == str((tmp_path / "run").resolve()))
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 3 == len(result.trials)
    for run in trials:
        params, metrics = run.data.params, run.data.metrics
        row = result.trials[result.trials["accuracy"] == metrics["accuracy"]].iloc[0]  # trials.csv's twin
        assert params == {"gpr": str(row["gpr"]), "pd": row["pd"]}  # the policy, as the sampler drew it
        assert run.info.run_name.startswith(f"gpr{row['gpr']:g}-{row['pd']}")  # named like the progress lines
        assert (metrics["flops"], metrics["params"]) == (row["flops"], row["params"])
        assert len(client.get_metric_history(run.info.run_id, "accuracy")) >= 1
    assert run.info.status == "FINISHED" and parent.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "trials.csv", "report"} <= artifacts
    front = mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="pareto.csv",
                                                tracking_uri=uri, dst_path=str(tmp_path / "dl"))
    assert open(front).read() == (tmp_path / "run" / "pareto.csv").read_text()
    assert (tmp_path / "run" / "mlruns").is_dir() and not (tmp_path / "mlruns").exists()  # artifacts stay in the run


@pytest.mark.slow
def test_wandb_offline_keeps_a_run_per_trial_and_one_for_the_front(ray_session, tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_config(search={"num_trials": 2, "trackers": ["wandb"]})
    result = run_search(cfg, tmp_path / "run", progress="quiet")
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == len(result.trials) + 1  # a run per trial, and the search's with the front
    logged = [path.read_bytes() for path in runs]
    front = [data for data in logged if b"pareto.csv" in data and b"front_size" in data]
    trials = [data for data in logged if b"front_size" not in data]
    assert len(front) == 1 and len(trials) == 2
    assert all(b"gpr" in data and b"accuracy" in data and b"flops" in data for data in trials)  # policy and metrics
    assert "wandb:" not in capsys.readouterr().out  # the search's run is silent
