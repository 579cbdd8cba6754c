"""Reports and selection on the output of a real small search (the session's nsga_run)."""
import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread

import pdsearch
from pdsearch.cli import main
from pdsearch.config import Constraints
from pdsearch.errors import NoFeasiblePolicy, PdsearchError
from pdsearch.reporting.selection import pick
from pdsearch.run.directory import load_run
from pdsearch.run.front import hypervolume, pareto_front


@pytest.fixture
def run_copy(nsga_run, tmp_path):
    """A copy of the search's run directory that a test may change."""
    _, run_dir, _ = nsga_run
    return shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("tune"))


def test_report_writes_self_contained_html_markdown_and_real_pngs(nsga_run, tmp_path):
    _, run_dir, _ = nsga_run
    rep = pdsearch.report(run_dir, out=tmp_path / "rep")
    assert set(rep.plots) == {"pareto_flops.png", "pareto_params.png", "accuracy_vs_gpr.png", "rate_profiles.png",
                              "screening.png"}
    for path in rep.plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 200
        assert image[..., :3].std() > 0.01  # something is drawn
    page = rep.html.read_text()
    interactive = {"pareto_flops.png", "pareto_params.png"}  # Plotly in the page, PNGs for report.md
    assert page.count('<img alt=') == len(rep.plots) - len(interactive)
    assert all(f'id="plot-{name[:-4]}"' in page for name in interactive)
    body = page[page.index("<body>"):]  # (the inlined plotly.js mentions URLs it never fetches here)
    assert "src=\"http" not in body and ".png\"" not in body  # nothing to fetch: opens offline (test_watch.py checks in Chromium)
    markdown = rep.markdown.read_text()
    for name in rep.plots:
        assert f"]({name})" in markdown
    front = pd.read_csv(run_dir / "pareto.csv")
    assert sorted(rep.front["trial_id"]) == sorted(front["trial_id"].astype(str))
    assert len(rep.tables["front"]) == len(front)
    for trial_id in front["trial_id"]:
        assert str(trial_id) in markdown and str(trial_id) in page
    assert "Hypervolume" in markdown and "reference point" in markdown
    assert 0 < rep.hypervolume < 1
    # best per PD at each GPR: one row per GPR searched, columns for the PDs that ran
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(rep.tables["best_per_pd"]) == trials["gpr"].nunique()
    assert set(rep.tables["best_per_pd"].columns) == {"GPR %", *trials["pd"].unique()}


def test_report_from_the_study_matches_trials_csv(nsga_run, tmp_path):
    _, run_dir, _ = nsga_run
    from_csv, from_study = load_run(run_dir, "csv"), load_run(run_dir, "study")
    assert from_study.source == "study"
    columns = ["trial_id", "gpr", "pd", "accuracy", "flops", "params", "acc_drop"]
    a = from_csv.trials[columns].sort_values("trial_id").reset_index(drop=True)
    b = from_study.trials[columns].sort_values("trial_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert pdsearch.report(run_dir, out=tmp_path / "s", source="study").hypervolume == pytest.approx(
        pdsearch.report(run_dir, out=tmp_path / "c", source="csv").hypervolume)


def test_report_on_a_partial_run(run_copy, tmp_path):
    trials = pd.read_csv(run_copy / "trials.csv")
    trials.head(3).to_csv(run_copy / "trials.csv", index=False)  # as if it crashed after 3 trials
    rep = pdsearch.report(run_copy, source="csv")  # (auto would read the study, which has all 8)
    assert "3 trials finished of 8 (partial run" in rep.markdown.read_text()
    assert set(rep.front["trial_id"]) <= set(trials.head(3)["trial_id"].astype(str))
    (run_copy / "trials.csv").unlink()  # and without trials.csv at all: the study has every trial
    assert len(load_run(run_copy).trials) == 8


def test_hypervolume_of_known_boxes():
    front = pd.DataFrame({"accuracy": [80.0, 60.0], "flops": [50.0, 20.0], "params": [1.0, 1.0]})
    # losses (0.2, 0.5) and (0.4, 0.2) against (1, 1): 0.8*0.5 + 0.6*0.8 - 0.6*0.5
    assert hypervolume(front, ["accuracy", "flops"], {"flops": 100, "params": 1}) == pytest.approx(0.58)
    assert hypervolume(front.iloc[:1], ["accuracy", "flops"], {"flops": 100, "params": 1}) == pytest.approx(0.4)


def test_pareto_front_respects_constraints():
    trials = pd.DataFrame({"accuracy": [99.0, 97.0, 90.0], "flops": [100.0, 50.0, 10.0], "params": [10.0, 5.0, 1.0],
                           "acc_drop": [0.5, 2.5, 9.5], "flops_reduction_pct": [0, 50, 90], "params_reduction_pct": [0, 50, 90]})
    objectives = ["accuracy", "flops", "params"]
    assert len(pareto_front(trials, objectives)) == 3
    assert list(pareto_front(trials, objectives, Constraints(max_acc_drop=3)).index) == [1, 0]
    assert len(pareto_front(trials, objectives, Constraints(max_acc_drop=3, min_flops_reduction=60))) == 0


def test_preferences_pick_the_expected_policy():
    front = pd.DataFrame({"accuracy": [99.0, 98.0, 80.0], "flops": [100.0, 50.0, 10.0], "params": [10.0, 5.0, 1.0]})
    objectives = ["accuracy", "flops", "params"]
    assert pick(front, "accuracy", objectives)[0].name == 0
    assert pick(front, "flops", objectives)[0].name == 2
    assert pick(front, "params", objectives)[0].name == 2
    row, why = pick(front, "knee", objectives)
    assert row.name == 1 and "knee" in why  # 1 point of accuracy for half the cost


def test_select_meets_constraints_lies_on_the_front_and_writes_policy_json(run_copy):
    chosen = pdsearch.select(run_copy, max_acc_drop=8.0, min_flops_reduction=20.0, prefer="knee")
    row = chosen.trial
    assert row["acc_drop"] <= 8.0 and row["flops_reduction_pct"] >= 20.0
    assert row["trial_id"] in set(pd.read_csv(run_copy / "pareto.csv")["trial_id"].astype(str))
    record = json.loads((run_copy / "policy.json").read_text())
    assert record["policy"]["gpr"] == row["gpr"] and record["policy"]["pd"] == row["pd"]
    assert record["rates"] == pytest.approx(json.loads(row["rates"]), abs=1e-6)
    assert record["flexiprune_list"] == pytest.approx(record["rates"] + [0.0])
    assert [layer["rate"] for layer in record["layers"]] == record["rates"]
    for key in ("accuracy", "acc_drop", "flops", "params", "flops_reduction_pct", "params_reduction_pct"):
        assert record["metrics"][key] == pytest.approx(row[key])
    assert record["selection"]["constraints"]["min_flops_reduction"] == 20.0


@pytest.mark.parametrize("prefer, column, best", [("accuracy", "accuracy", max), ("flops", "flops", min), ("params", "params", min)])
def test_select_preferences_on_the_real_front(nsga_run, run_copy, prefer, column, best):
    chosen = pdsearch.select(run_copy, prefer=prefer)
    front = load_run(run_copy).front()
    assert chosen.trial[column] == best(front[column])


def test_no_feasible_policy_exits_3_naming_the_closest(run_copy, capsys):
    assert main(["select", str(run_copy), "--max-acc-drop", "0", "--min-flops-reduction", "99"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "closest is GPR" in err and "misses" in err and "by" in err
    assert not (run_copy / "policy.json").exists()
    with pytest.raises(NoFeasiblePolicy):
        pdsearch.select(run_copy, min_flops_reduction=99.9)


@pytest.mark.parametrize("argv, message", [
    (["select", "{run}", "--min-flops-reduction", "150"], "min_flops_reduction"),
    (["select", "{run}", "--max-acc-drop", "-1"], "max_acc_drop"),
    (["select", "{run}", "--prefer", "fastest"], "invalid choice"),
    (["select", "{run}", "--export", "/no/such/dir/m.pt2"], "does not exist"),
    (["select", "{run}", "--export", "{run}/m.pt2", "--finetune-epochs", "0"], "finetune epochs"),
    (["select", "{tmp}"], "not a pdsearch run directory"),
    (["report", "{tmp}"], "not a pdsearch run directory"),
    (["report", "{run}", "--source", "database"], "invalid choice"),
])
def test_bad_report_and_select_input_is_one_line_exit_2(run_copy, tmp_path, capsys, argv, message):
    argv = [a.format(run=run_copy, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_report_of_a_run_without_completed_trials_is_an_error(run_copy):
    trials = pd.read_csv(run_copy / "trials.csv")
    trials.assign(status="failed").to_csv(run_copy / "trials.csv", index=False)
    with pytest.raises(PdsearchError, match="no completed trial"):
        pdsearch.report(run_copy)


FRESH_PROCESS = textwrap.dedent("""
    import json, sys, torch
    from fvcore.nn import FlopCountAnalysis
    model = torch.export.load(sys.argv[1]).module()
    x, y = torch.load(sys.argv[2])
    with torch.no_grad():
        accuracy = 100.0 * (model(x).argmax(1) == y).float().mean().item()
    flops = FlopCountAnalysis(model, (x[:1],))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    print(json.dumps({"accuracy": accuracy, "flops": flops.total(), "params": sum(p.numel() for p in model.parameters()),
                      "pdsearch_imported": any(m.startswith("pdsearch") for m in sys.modules)}))
""")


def test_exported_model_loads_in_a_fresh_process_with_policy_json_figures(nsga_run, run_copy, tmp_path):
    cfg, _, _ = nsga_run
    path = tmp_path / "pruned.pt2"
    assert main(["select", str(run_copy), "--prefer", "knee", "--export", str(path)]) == 0
    record = json.loads((run_copy / "policy.json").read_text())
    assert record["export"]["path"] == str(path) and "rerun" in record["export"]["source"]

    from pdsearch.trial.baseline import model_and_data

    _, data = model_and_data(cfg)
    torch.save((data.test.x, data.test.y), tmp_path / "test.pt")
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(path), str(tmp_path / "test.pt")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not loaded["pdsearch_imported"]
    assert loaded["flops"] == record["metrics"]["flops"] == record["export"]["flops"]
    assert loaded["params"] == record["metrics"]["params"] == record["export"]["params"]
    assert loaded["accuracy"] == pytest.approx(record["export"]["test_accuracy"], abs=1e-3)
    # the rerun reproduces the trial (same seed and fine-tuning); allow thread-count noise
    assert loaded["accuracy"] == pytest.approx(record["metrics"]["test_accuracy"], abs=1.5)


def test_export_with_a_longer_final_finetune(run_copy, tmp_path):
    chosen = pdsearch.select(run_copy, prefer="accuracy", export=tmp_path / "long.pt2", finetune_epochs=3)
    export = chosen.record["export"]
    assert export["finetune_epochs"] == 3 and "fine-tuned 3 epochs instead of 1" in export["source"]
    assert export["flops"] == chosen.record["metrics"]["flops"]
    extra = {"policy.json": ""}
    program = torch.export.load(str(tmp_path / "long.pt2"), extra_files=extra)
    assert json.loads(extra["policy.json"])["trial_id"] == chosen.record["trial_id"]  # travels with the model
    assert program.module()(torch.zeros(5, *export["input"]["shape"])).shape == (5, 10)
    assert np.isfinite(export["val_accuracy"])
    # the export's record sits beside it; a later selection rewrites policy.json, never that record
    beside = json.loads((tmp_path / "long.pt2.json").read_text())
    assert beside == json.loads(extra["policy.json"]) and beside["export"]["path"] == str(tmp_path / "long.pt2")
    other = pdsearch.select(run_copy, prefer="flops")
    assert json.loads((run_copy / "policy.json").read_text())["trial_id"] == other.record["trial_id"]
    assert json.loads((tmp_path / "long.pt2.json").read_text()) == beside


def test_the_summary_counts_by_status_in_the_progress_words_and_lists_only_files_that_exist(nsga_run, capsys):
    from pdsearch.cli import _print_front

    _, run_dir, result = nsga_run
    trials = result.trials.copy()
    trials.loc[trials.index[:2], "status"] = "stopped"
    _print_front(dataclasses.replace(result, trials=trials, front=result.front.iloc[0:0]))
    out = capsys.readouterr().out
    n = len(trials)
    assert f"trials: {n} ({n - 2} ok, 2 stopped, 0 failed, 0 infeasible)" in out
    assert "Pareto front: empty" in out and f"next: pdsearch report {run_dir}" in out  # said even when empty
    listed = out.split(f"written to {run_dir}: ")[1].splitlines()[0].split(", ")
    assert listed and all((run_dir / name.rstrip("/")).exists() for name in listed)
    assert "study.db" in listed and "trials.csv" in listed
