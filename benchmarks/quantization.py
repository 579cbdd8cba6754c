"""What INT8 does to pruned policies: latency on ONNX Runtime at 224, and accuracy after quantization on digits.

    python benchmarks/quantization.py [--part latency,drop,multiples] [--models resnet18,mobilenet_v2]
                                      [--digits-models small_cnn,resnet20] [--threads 2]

latency: for each model at 224×224 (untrained weights: latency depends on shapes), PD1-PD5 at
FLOPs budgets of 30/50/70% with round_to 1 and 8 (30 policies), each really pruned and timed
on ONNX Runtime (batch 1) in FP32 and in INT8 (static quantization, pdsearch's recipe),
beside the unpruned model in both, in alternating rounds. Prints, per round_to, the
Spearman correlation of FP32 and INT8 latency over the policies, the spread of INT8's
speed-up over the same policy in FP32, and how many pruned INT8 models are slower than the
INT8 baseline; and per budget, whether FP32's fastest PD is INT8's.

drop: on digits (16×16), for each model a 15-epoch baseline, then one trial per GPR
(30/50/70/85) and PD (PD1, PD3, sensitivity) in INT8, as the search runs it: FP32 and INT8
validation accuracy and the quantization drop (points).

multiples: the channel counts INT8 and FP32 convolutions favour (a 3×3 conv pair at 48-80
channels, and a depthwise 3×3 at 80-144, at 56×56), per channel² and per channel.
"""
import argparse
import copy

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from pdsearch.config import parse_config
from pdsearch.cost.latency import compare, session, time_session, torch_threads
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune
from pdsearch.trial.baseline import build_baseline
from pdsearch.trial.profile import compute_profile
from pdsearch.trial.trial import run_trial

PDS = ["PD1", "PD2", "PD3", "PD4", "PD5"]


def latency_part(models: list[str], threads: int, runs: int, rounds: int) -> None:
    rows = []
    for model in models:
        planner = Planner(model, num_classes=1000, input_size=224)
        baseline = copy.deepcopy(planner.structure.model).eval()
        batch = torch.randn(1, 3, 224, 224)
        for budget in (30, 50, 70):
            for round_to in (1, 8):
                for pd_name in PDS:
                    rates = planner.plan(Policy(budget=budget, pd=pd_name, round_to=round_to)).rates
                    pruned = prune(analyze(copy.deepcopy(baseline), 224), rates).eval()
                    int8, base8, base32, fp32 = compare(pruned, baseline, batch, warmup=5, runs=runs, rounds=rounds,
                                                        runtime="onnxruntime", threads=threads, precision="int8",
                                                        reference="fp32")
                    rows.append({"model": model, "budget": budget, "round_to": round_to, "pd": pd_name,
                                 "fp32_ratio": fp32.median_ms / base32.median_ms,
                                 "int8_ratio": int8.median_ms / base8.median_ms,
                                 "speedup": fp32.median_ms / int8.median_ms, "int8_ms": int8.median_ms,
                                 "fp32_ms": fp32.median_ms})
                    print(f"{model} FLOPs -{budget}% {pd_name} round_to {round_to}: FP32 {fp32.median_ms:.2f} ms "
                          f"(x{rows[-1]['fp32_ratio']:.2f} of baseline), INT8 {int8.median_ms:.2f} ms "
                          f"(x{rows[-1]['int8_ratio']:.2f}), INT8 speed-up {rows[-1]['speedup']:.2f}x", flush=True)
    table = pd.DataFrame(rows)
    summary = []
    for (model, round_to), part in table.groupby(["model", "round_to"], sort=False):
        summary.append({"model": model, "round_to": round_to, "policies": len(part),
                        "spearman_fp32_int8": spearmanr(part["fp32_ratio"], part["int8_ratio"]).statistic,
                        "int8_speedup_min": part["speedup"].min(), "int8_speedup_max": part["speedup"].max(),
                        "int8_slower_than_int8_baseline": int((part["int8_ratio"] > 1).sum())})
    picks = []
    for (model, budget, round_to), part in table.groupby(["model", "budget", "round_to"], sort=False):
        fp32_pick, int8_pick = part.loc[part["fp32_ratio"].idxmin()], part.loc[part["int8_ratio"].idxmin()]
        picks.append({"model": model, "budget": budget, "round_to": round_to, "fastest_fp32": fp32_pick["pd"],
                      "fastest_int8": int8_pick["pd"],
                      "fp32_pick_in_int8_x": fp32_pick["int8_ratio"] / int8_pick["int8_ratio"]})
    print(f"\nONNX Runtime CPU, {threads} threads, batch 1, 224x224, {rounds} rounds of {runs} runs")
    print(pd.DataFrame(summary).to_markdown(index=False, floatfmt=".2f"))
    print()
    print(pd.DataFrame(picks).to_markdown(index=False, floatfmt=".2f"))


def drop_part(models: list[str]) -> None:
    torch.set_num_threads(1)
    cpu, rows = torch.device("cpu"), []
    for model in models:
        cfg = parse_config({
            "name": f"quantization-{model}", "data": {"dataset": "digits", "input_size": 16},
            "model": {"name": model}, "baseline": {"epochs": 15, "lr": 0.05}, "finetune": {"epochs": 3, "lr": 0.02},
            "space": {"gpr": {"values": [30, 50, 70, 85]}, "pd": ["PD1", "PD3", "sensitivity"], "precision": ["int8"]},
        })
        baseline = build_baseline(cfg, cpu)
        profile = compute_profile(cfg, baseline, cpu)
        print(f"{model}: baseline val {baseline.val_accuracy:.2f}%", flush=True)
        for gpr in (30, 50, 70, 85):
            for pd_name in ("PD1", "PD3", "sensitivity"):
                m = run_trial({"gpr": float(gpr), "pd": pd_name}, cfg, baseline, cpu, profile)
                rows.append({"model": model, "gpr": gpr, "pd": pd_name, "fp32": m.get("accuracy_fp32"),
                             "int8": m["accuracy"], "drop": m.get("quantization_drop"), "status": m["status"]})
                print(f"  GPR {gpr} {pd_name:<12} FP32 {rows[-1]['fp32']:.2f}%  INT8 {m['accuracy']:.2f}%  "
                      f"drop {rows[-1]['drop']:+.2f}", flush=True)
    table = pd.DataFrame(rows)
    print("\nquantization drop (FP32 - INT8 validation accuracy, points), by GPR (rows) and PD (columns)")
    for model, part in table.groupby("model", sort=False):
        print(f"\n{model}")
        print(part.pivot(index="gpr", columns="pd", values="drop").to_markdown(floatfmt="+.2f"))


def multiples_part(threads: int) -> None:
    with torch_threads(threads):
        for kind, counts in (("conv", range(48, 81)), ("depthwise", range(80, 145, 4))):
            for c in counts:
                if kind == "conv":
                    m = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
                else:
                    m = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.ReLU6())
                x = torch.randn(1, c, 56, 56)
                runs = {p: session("onnxruntime", m.eval(), x, threads, p) for p in ("int8", "fp32")}
                ms = {p: float(np.median([time_session(r, 3, 20).median_ms for _ in range(3)])) for p, r in runs.items()}
                per = c * c if kind == "conv" else c
                print(f"{kind:9s} {c:3d} ch: INT8 {ms['int8'] * 1e3:6.0f} us ({ms['int8'] / per * 1e6:7.1f} ns/unit)  "
                      f"FP32 {ms['fp32'] * 1e3:6.0f} us ({ms['fp32'] / per * 1e6:7.1f} ns/unit)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", default="latency,drop")
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--digits-models", default="small_cnn,resnet20")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    parts = args.part.split(",")
    if "multiples" in parts:
        multiples_part(args.threads)
    if "latency" in parts:
        latency_part(args.models.split(","), args.threads, args.runs, args.rounds)
    if "drop" in parts:
        drop_part(args.digits_models.split(","))


if __name__ == "__main__":
    main()
