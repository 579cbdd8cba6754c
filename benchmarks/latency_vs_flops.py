"""FLOPs reduction against measured CPU latency reduction: where fewer FLOPs do not mean faster.

    python benchmarks/latency_vs_flops.py [--models resnet18,mobilenet_v2] [--budgets 30,50,70] [--input-size 224]
                                          [--runtimes torch,onnxruntime]

For each model, PD1-PD5 and the data-driven allocators (sensitivity, loss_aware) at each
FLOPs budget, with and without round_to 8, really pruned and timed against the unpruned
model side by side on each runtime (PyTorch eager, ONNX Runtime's CPU provider; batch 1,
the trial's own method: warm-up, median of timed runs, alternating rounds). Prints a
table with the runtimes side by side and writes latency_vs_flops.png.

Latency depends on the shapes alone, so the timed models have untrained weights. The
data-driven allocators need a trained model and data: each model is trained briefly on
the embedded digits (32x32, the only data here), its sensitivity profile and loss-aware
allocation (criterion l1 only, coarser steps: LAASP's loop is slow on a CPU) are measured there, and the per-group rates they choose are applied to the
model at --input-size (same channel groups; its FLOPs reduction is counted at that size,
so it lies near, not on, the budget).
"""
import argparse
import copy
import dataclasses

import pandas as pd
import torch
from figures import save  # benchmarks/figures.py (scripts run from this folder)
from matplotlib.figure import Figure

from pdsearch.catalog.runtimes import RUNTIMES
from pdsearch.config import parse_config
from pdsearch.cost.latency import compare, reduction_pct
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune
from pdsearch.space import SearchSpace
from pdsearch.trial.baseline import build_baseline
from pdsearch.trial.profile import compute_profile
from pdsearch.trial.trial import allocate, trial_context

PDS = ["PD1", "PD2", "PD3", "PD4", "PD5"]
DATA_DRIVEN = ["sensitivity", "loss_aware"]


def data_driven_rates(model: str, budgets: list[float], epochs: int) -> dict[tuple[str, float, int], list[float]]:
    """Per-group rates that sensitivity and loss_aware choose on ``model`` trained on digits, by (pd, budget, round_to)."""
    cfg = parse_config({
        "name": f"latency-{model}", "data": {"dataset": "digits", "input_size": 32, "batch_size": 64},
        "model": {"name": model, "kwargs": {}}, "baseline": {"epochs": epochs},
        "space": {"gpr": None, "budget": {"flops_reduction": {"low": min(budgets), "high": max(budgets)}},
                  "pd": DATA_DRIVEN,
                  # LAASP's loop is slow on 2 CPU cores: one criterion, 1/8 of a group per step, one batch per loss
                  "criteria_pool": ["l1"], "allocators": {"loss_aware": {"slice": 0.125, "loss_batches": 1}}},
    })
    baseline = build_baseline(cfg, torch.device("cpu"))
    print(f"{model} on digits: val accuracy {baseline.val_accuracy:.2f}% after {epochs} epochs", flush=True)
    profile = compute_profile(cfg, baseline, torch.device("cpu"))
    ctx, space, rates = trial_context(cfg, baseline), SearchSpace(cfg), {}
    for pd_name in DATA_DRIVEN:
        for budget in budgets:
            for round_to in (1, 8):
                policy = dataclasses.replace(space.policy({"budget": budget, "pd": pd_name}), round_to=round_to)
                rates[pd_name, budget, round_to] = allocate(ctx, policy, cfg, torch.device("cpu"), profile).rates
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--budgets", default="30,50,70")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--train-epochs", type=int, default=3, help="digits training before the data-driven allocations")
    parser.add_argument("--runtimes", default="torch,onnxruntime")
    parser.add_argument("--out", default="latency_vs_flops.png")
    args = parser.parse_args()
    size, rows = args.input_size, []
    runtimes = args.runtimes.split(",")
    for runtime in runtimes:
        RUNTIMES[runtime].check_installed()
    budgets = [float(b) for b in args.budgets.split(",")]
    for model in args.models.split(","):
        threads = torch.get_num_threads()
        measured = data_driven_rates(model, budgets, args.train_epochs)
        torch.set_num_threads(threads)  # (the profile runs with the trial's thread count) timings use them all
        planner = Planner(model, num_classes=1000, input_size=size)
        baseline = copy.deepcopy(planner.structure.model).eval()
        batch = torch.randn(1, 3, size, size)
        for round_to in (1, 8):
            for budget in budgets:
                for pd_name in PDS + DATA_DRIVEN:
                    policy = Policy(budget=budget, pd=pd_name, round_to=round_to)
                    if pd_name in DATA_DRIVEN:
                        plan = planner.plan_rates(policy, measured[pd_name, budget, round_to])
                    else:
                        plan = planner.plan(policy)
                    pruned = prune(analyze(copy.deepcopy(baseline), size), plan.rates).eval()
                    for runtime in runtimes:
                        mine, theirs = compare(pruned, baseline, batch, warmup=5, runs=args.runs, runtime=runtime,
                                               threads=threads)
                        rows.append({"model": model, "runtime": runtime, "round_to": round_to, "budget": budget,
                                     "pd": pd_name, "flops_red_%": plan.flops["reduction_pct"],
                                     "latency_red_%": reduction_pct(mine.median_ms, theirs.median_ms),
                                     "latency_ms": mine.median_ms, "baseline_ms": theirs.median_ms})
                        print(f"{model} {runtime} round_to {round_to} {budget:g}% {pd_name}: "
                              f"FLOPs -{plan.flops['reduction_pct']:.1f}%, latency reduced "
                              f"{rows[-1]['latency_red_%']:+.1f}% ({mine.median_ms:.2f} vs {theirs.median_ms:.2f} ms)",
                              flush=True)
    table = pd.DataFrame(rows)
    print(f"\nCPU, {torch.get_num_threads()} threads, batch 1, {size}x{size}; latency reduction (%) per runtime")
    side = table.pivot_table(index=["model", "round_to", "budget", "pd", "flops_red_%"], columns="runtime",
                             values="latency_red_%", sort=False).reset_index()
    print(side.to_markdown(index=False, floatfmt=".2f"))
    gap = table.assign(gap=table["flops_red_%"] - table["latency_red_%"])
    print("\nmean (FLOPs reduction - latency reduction), points, by model, runtime and round_to:")
    print(gap.groupby(["model", "runtime", "round_to"])["gap"].mean().unstack().to_markdown(floatfmt=".2f"))
    slower = gap.assign(slower=gap["latency_red_%"] < 0)
    print("\npolicies slower than their baseline, by model and runtime:")
    print(slower.groupby(["model", "runtime"])["slower"].agg(["sum", "count"]).to_markdown())
    kind = gap.assign(allocation=gap["pd"].map(lambda p: p if p in DATA_DRIVEN else "PD1-PD5"))
    print("\n... by allocation (both round_to):")
    print(kind.groupby(["model", "runtime", "allocation"])["gap"].mean().unstack().to_markdown(floatfmt=".2f"))
    panels = list(table.groupby(["runtime", "model"], sort=False).groups)
    fig = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
    for ax, (runtime, model) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        part = table[(table["model"] == model) & (table["runtime"] == runtime)]
        for round_to, marker in ((1, "o"), (8, "s")):
            colour = f"C{round_to // 8}"
            for data_driven in (False, True):  # hollow: the data-driven allocations
                sel = part[(part["round_to"] == round_to) & (part["pd"].isin(DATA_DRIVEN) == data_driven)]
                ax.scatter(sel["flops_red_%"], sel["latency_red_%"], marker=marker, edgecolors=colour,
                           facecolors="none" if data_driven else colour,
                           label=f"round_to {round_to}, " + ("sensitivity / loss_aware" if data_driven else "PD1-PD5"))
        top = float(part["flops_red_%"].max())
        ax.plot([0, top], [0, top], color="grey", ls=":", lw=1, label="latency falls as FLOPs do")
        ax.set(xlabel="FLOPs reduction (%)", ylabel="measured latency reduction (%)",
               title=f"{model}, {runtime}, CPU, batch 1")
    save(fig, args.out)


if __name__ == "__main__":
    main()
