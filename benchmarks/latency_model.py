"""How well a latency table built on this machine predicts pruned models' measured latency.

    python benchmarks/latency_model.py [--models resnet18,mobilenet_v2] [--runtimes onnxruntime,torch]
                                       [--precisions fp32,int8] [--input-size 224] [--threads 2] [--policies 40]

For each model, runtime and precision (int8: ONNX Runtime static quantization, on onnxruntime
only): builds the table (pdsearch latency-table's code; prints how
long it took), then plans held-out policies — PD1-PD5 at FLOPs budgets drawn in
[20, 70]%, and random per-group rates (irregular allocations like sensitivity's), each
with round_to 1 and 8 — really prunes each one, times it against the unpruned model in
alternating rounds on the same runtime, and compares with the table's prediction.
Prints per policy, then per model and runtime Spearman's rank correlation and the median
absolute error (% of measured), drift-free (each measured latency as a ratio to the baseline
timed beside it, against the predicted ratio: the machine's speed drifts over a run) and
raw (milliseconds against milliseconds). Weights are untrained: latency depends on shapes
alone.
"""
import argparse
import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from pdsearch.cost.latency import compare
from pdsearch.cost.table_build import build_table, irregular_rates
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune

PDS = ["PD1", "PD2", "PD3", "PD4", "PD5"]


def held_out(planner: Planner, count: int, seed: int) -> list[tuple[str, list[float], int]]:
    """(label, rates, round_to): PD1-PD5 at random FLOPs budgets, and random per-group rates."""
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        round_to = (1, 8)[len(found) % 2]
        if len(found) % 4 < 2:
            pd_name, budget = PDS[rng.integers(len(PDS))], float(rng.uniform(20, 70))
            try:
                plan = planner.plan(Policy(budget=round(budget, 1), pd=pd_name, round_to=round_to))
            except Exception:
                continue
            found.append((f"{pd_name} FLOPs -{budget:.0f}%", plan.rates, round_to))
        else:
            found.append(("random rates", irregular_rates(planner.groups, rng, round_to, lowest_cap=0.2), round_to))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--runtimes", default="onnxruntime,torch")
    parser.add_argument("--precisions", default="fp32", help="fp32, int8 or both (int8 runs on onnxruntime only)")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--policies", type=int, default=40)
    parser.add_argument("--points", type=int, default=6, help="channel counts sampled per layer axis")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds, pruned against baseline")
    parser.add_argument("--save", help="a folder: each table, and the policies' rates and measured ratios, as JSON "
                                       "(to try another latency model on the same measurements)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, builds = [], []
    for model in args.models.split(","):
        planner = Planner(model, num_classes=1000, input_size=args.input_size)
        baseline = copy.deepcopy(planner.structure.model).eval()
        batch = torch.randn(1, 3, args.input_size, args.input_size)
        policies = held_out(planner, args.policies, seed=1)
        for runtime, precision in [(r, p) for r in args.runtimes.split(",") for p in args.precisions.split(",")
                                   if p == "fp32" or r == "onnxruntime"]:
            start = time.time()
            table = build_table(copy.deepcopy(baseline), model, args.input_size, runtime=runtime, threads=args.threads,
                                points=args.points, precision=precision)
            builds.append({"model": model, "runtime": runtime, "precision": precision, "build_s": time.time() - start,
                           "layers": len(table.layers), "shapes": len(table.tables),
                           "baseline_ms": table.baseline_ms,
                           **dict(zip(("scale", "penalty_scale", "reorder_ms", "off_layer_ms"), table.coefficients))})
            print(f"{model} {runtime} {precision}: table of {len(table.tables)} layer shapes built in {time.time() - start:.0f} s, "
                  f"baseline {table.baseline_ms:.2f} ms (weights of {', '.join(table.TERMS)}: "
                  f"{', '.join(f'{w:.3g}' for w in table.coefficients)})", flush=True)
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                table.save(Path(args.save) / f"{model}-{runtime}-{precision}.table.json")
            predictor = planner.latency_predictor(table)
            base_pred = predictor(np.zeros(len(planner.groups)))
            for label, rates, round_to in policies:
                pruned = prune(analyze(copy.deepcopy(baseline), args.input_size), rates).eval()
                mine, theirs = compare(pruned, baseline, batch, warmup=5, runs=args.runs, rounds=args.rounds,
                                       runtime=runtime, threads=args.threads, precision=precision)
                predicted = predictor(planner.pruned_channels(rates))
                # the table's prediction scaled to this moment's baseline: both are relative to the unpruned model
                measured_red = 100 * (1 - mine.median_ms / theirs.median_ms)
                predicted_red = 100 * (1 - predicted / base_pred)
                rows.append({"model": model, "runtime": runtime, "precision": precision, "policy": label,
                             "round_to": round_to, "rates": list(map(float, rates)),
                             "flops_red_%": planner.plan_rates(Policy(gpr=10), rates).flops["reduction_pct"],
                             "measured_ms": mine.median_ms, "baseline_ms": theirs.median_ms,
                             "predicted_ms": predicted, "measured_red_%": measured_red,
                             "predicted_red_%": predicted_red})
                print(f"  {label:22s} round_to {round_to}: measured {mine.median_ms:7.2f} ms ({measured_red:+.1f}%), "
                      f"predicted {predicted:7.2f} ms ({predicted_red:+.1f}%)", flush=True)
    table = pd.DataFrame(rows)
    if args.save:
        table.to_json(Path(args.save) / "policies.json", orient="records", indent=1, double_precision=15)
    # Drift-free: each measured latency against the baseline timed beside it, the prediction against the table's
    table["measured_ratio"] = table["measured_ms"] / table["baseline_ms"]
    table["predicted_ratio"] = 1 - table["predicted_red_%"] / 100
    table["err_%"] = 100 * (table["predicted_ratio"] - table["measured_ratio"]).abs() / table["measured_ratio"]
    table["raw_err_%"] = 100 * (table["predicted_ms"] - table["measured_ms"]).abs() / table["measured_ms"]
    summary = []
    for (model, runtime, precision), part in table.groupby(["model", "runtime", "precision"], sort=False):
        summary.append({"model": model, "runtime": runtime, "precision": precision, "policies": len(part),
                        "spearman": spearmanr(part["predicted_ratio"], part["measured_ratio"]).statistic,
                        "median_err_%": part["err_%"].median(),
                        "reduction_gap_pts": (part["predicted_red_%"] - part["measured_red_%"]).abs().median(),
                        "spearman_raw_ms": spearmanr(part["predicted_ms"], part["measured_ms"]).statistic,
                        "median_raw_err_%": part["raw_err_%"].median(),
                        "slower_than_baseline": int((part["measured_red_%"] < 0).sum()),
                        "baseline_ms_range": f"{part['baseline_ms'].min():.2f}-{part['baseline_ms'].max():.2f}"})
    print(f"\nCPU, {args.threads} threads, batch 1, {args.input_size}x{args.input_size}")
    print(pd.DataFrame(builds).to_markdown(index=False, floatfmt=".2f"))
    print()
    print(pd.DataFrame(summary).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
