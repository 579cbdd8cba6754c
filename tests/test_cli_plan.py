"""`pdsearch plan`: output fields, grid, and one-line errors with exit code 2."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from pdsearch.cli import main


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_json_fields(capsys):
    code, out, _ = run_cli(["plan", "--model", "resnet20", "--input-size", "32", "--gpr", "40", "--pd", "3", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert {"model", "gpr", "pd", "mode", "layers", "flexiprune_list", "flops", "params"} <= set(data)
    assert data["model"] == "resnet20" and data["gpr"] == 40 and data["pd"] == "PD3" and data["mode"] == "calibrated"
    assert all({"name", "rate"} <= set(layer) for layer in data["layers"])
    assert data["flexiprune_list"] == [layer["rate"] for layer in data["layers"]] + [0.0]
    for key in ("flops", "params"):
        c = data[key]
        assert c["pruned"] < c["base"]
        assert c["reduction_pct"] == pytest.approx(100 * (1 - c["pruned"] / c["base"]), abs=1e-3)


def test_plan_flexiprune_text(capsys):
    code, out, _ = run_cli(["plan", "--model", "vgg11", "--input-size", "32", "--gpr", "30", "--pd", "PD2", "--mode", "flexiprune"], capsys)
    assert code == 0
    assert "FlexiPrune list_pruning: [0.12, 0.24, 0.27, 0.3, 0.34, 0.36, 0.4, 0.43, 0.3, 0.3, 0.0]" in out
    assert "FLOPs" in out and "params" in out and "features.0" in out


def test_plan_grid_csv(tmp_path, capsys):
    csv = tmp_path / "grid.csv"
    code, out, _ = run_cli(["plan", "--model", "resnet20", "--input-size", "32", "--grid", "--gprs", "20,50",
                            "--pds", "1,2,3,4,5", "--csv", str(csv)], capsys)
    assert code == 0 and "flops_reduction_pct" in out
    table = pd.read_csv(csv)
    assert len(table) == 10 and set(table["pd"]) == {"PD1", "PD2", "PD3", "PD4", "PD5"}
    by_gpr = table.groupby("gpr")["flops_reduction_pct"]
    assert (by_gpr.max() - by_gpr.min() < 1.0).all()  # equal FLOPs per GPR
    assert table.groupby("gpr")["params_reduction_pct"].nunique().min() == 5  # but different params


@pytest.mark.parametrize("args,message", [
    (["--model", "resnet20", "--gpr", "100"], "GPR must be"),
    (["--model", "resnet20", "--gpr", "-5"], "GPR must be"),
    (["--model", "resnet20", "--gpr", "20", "--pd", "PD7"], "unknown pruning distribution"),
    (["--model", "resnet_9", "--gpr", "20"], "unknown model"),
    (["--model", "resnet20", "--gpr", "20", "--criterion", "l7"], "unknown criterion"),
    (["--model", "resnet20", "--gpr", "20", "--input-size", "0"], "input size must be a positive integer"),
    (["--model", "vgg13", "--input-size", "32", "--gpr", "70", "--pd", "2", "--mode", "flexiprune"], "would prune 109%"),
    (["--model", "resnet20"], "needs --gpr"),
    (["--model", "resnet20", "--gpr", "abc"], "invalid float value"),
    (["--model", "shufflenet_v2_x0_5", "--input-size", "64", "--gpr", "20"], "cannot be pruned structurally"),
])
def test_plan_bad_input(args, message, capsys):
    code, out, err = run_cli(["plan", *args], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_errors_have_no_traceback_in_a_real_process():
    args = ["plan", "--model", "resnet20", "--gpr", "20", "--pd", "x"]  # (the in-process table has the rest)
    proc = subprocess.run([sys.executable, "-m", "pdsearch", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("pdsearch: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_python_api_matches_cli(capsys):
    import pdsearch

    plan = pdsearch.plan("resnet20", 40, 3, input_size=32)
    _, out, _ = run_cli(["plan", "--model", "resnet20", "--input-size", "32", "--gpr", "40", "--pd", "3", "--json"], capsys)
    assert json.loads(out) == json.loads(json.dumps(plan.to_dict()))


def test_plan_a_flops_budget(capsys):
    code, out, _ = run_cli(["plan", "--model", "resnet20", "--input-size", "32", "--flops-reduction", "50", "--pd", "3",
                            "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["budget"] == 50 and data["budget_metric"] == "flops"
    assert abs(data["flops"]["reduction_pct"] - 50) <= 0.5 and 0 < data["gpr"] < 50
    code, out, _ = run_cli(["plan", "--model", "resnet20", "--input-size", "32", "--params-reduction", "40"], capsys)
    assert code == 0 and "params -40%" in out and "homogeneous equivalent" in out


def test_plan_grid_over_budgets(tmp_path, capsys):
    csv = tmp_path / "grid.csv"
    code, out, _ = run_cli(["plan", "--model", "resnet20", "--input-size", "32", "--grid", "--flops-reductions",
                            "30,50,70", "--pds", "1,2,5", "--csv", str(csv)], capsys)
    table = pd.read_csv(csv)
    assert code == 0 and len(table) == 9 and "budget %" in out
    assert ((table["flops_reduction_pct"] - table["budget"]).abs() <= 0.5).all()


def test_plan_round_to(capsys):
    code, out, _ = run_cli(["plan", "--model", "resnet18", "--input-size", "64", "--flops-reduction", "50",
                            "--round-to", "8", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and all(layer["kept"] % 8 == 0 for layer in data["layers"])
    assert abs(data["flops"]["reduction_pct"] - 50) <= 0.5
