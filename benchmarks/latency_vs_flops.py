"""FLOPs reduction against measured CPU latency reduction: where fewer FLOPs do not mean faster.

    python benchmarks/latency_vs_flops.py [--models resnet18,mobilenet_v2] [--budgets 30,50,70] [--input-size 224]

For each model, PD1-PD5 at each FLOPs budget, with and without round_to 8, really pruned
and timed against the unpruned model side by side (batch 1, the trial's own method:
warm-up, median of timed runs, alternating rounds). Prints a table and writes
latency_vs_flops.png. Weights are untrained: latency depends on the shapes alone.
"""
import argparse
import copy

import pandas as pd
import torch
from matplotlib.figure import Figure

from pdsearch.cost.latency import compare
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune

PDS = ["PD1", "PD2", "PD3", "PD4", "PD5"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--budgets", default="30,50,70")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default="latency_vs_flops.png")
    args = parser.parse_args()
    size, rows = args.input_size, []
    for model in args.models.split(","):
        planner = Planner(model, num_classes=1000, input_size=size)
        baseline = copy.deepcopy(planner.structure.model).eval()
        batch = torch.randn(1, 3, size, size)
        for round_to in (1, 8):
            for budget in (float(b) for b in args.budgets.split(",")):
                for pd_name in PDS:
                    plan = planner.plan(Policy(budget=budget, pd=pd_name, round_to=round_to))
                    pruned = prune(analyze(copy.deepcopy(baseline), size), plan.rates).eval()
                    mine, theirs = compare(pruned, baseline, batch, warmup=5, runs=args.runs)
                    rows.append({"model": model, "round_to": round_to, "budget": budget, "pd": pd_name,
                                 "flops_red_%": plan.flops["reduction_pct"],
                                 "latency_red_%": 100 * (1 - mine.median_ms / theirs.median_ms),
                                 "latency_ms": mine.median_ms, "baseline_ms": theirs.median_ms})
                    print(f"{model} round_to {round_to} {budget:g}% {pd_name}: FLOPs -{plan.flops['reduction_pct']:.1f}%, "
                          f"latency reduced {rows[-1]['latency_red_%']:+.1f}% ({mine.median_ms:.2f} vs {theirs.median_ms:.2f} ms)",
                          flush=True)
    table = pd.DataFrame(rows)
    print(f"\nCPU, {torch.get_num_threads()} threads, batch 1, {size}x{size}")
    print(table.to_markdown(index=False, floatfmt=".2f"))
    gap = table.assign(gap=table["flops_red_%"] - table["latency_red_%"])
    print("\nmean (FLOPs reduction - latency reduction), points, by model and round_to:")
    print(gap.groupby(["model", "round_to"])["gap"].mean().unstack().to_markdown(floatfmt=".2f"))
    models = table["model"].unique()
    fig = Figure(figsize=(6 * len(models), 4.5), layout="constrained")
    for ax, model in zip(fig.subplots(1, len(models), squeeze=False)[0], models):
        part = table[table["model"] == model]
        for round_to, marker in ((1, "o"), (8, "s")):
            sel = part[part["round_to"] == round_to]
            ax.scatter(sel["flops_red_%"], sel["latency_red_%"], marker=marker, label=f"round_to {round_to}")
        top = float(part["flops_red_%"].max())
        ax.plot([0, top], [0, top], color="grey", ls=":", lw=1, label="latency falls as FLOPs do")
        ax.set(xlabel="FLOPs reduction (%)", ylabel="measured latency reduction (%)", title=f"{model}, CPU, batch 1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(args.out, dpi=110)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
