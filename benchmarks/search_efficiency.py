"""Hypervolume per fine-tune epoch: FIFO searches against MO-ASHA, side by side, same seeds.

    python benchmarks/search_efficiency.py [--spaces quickstart,large] [--trials 24] [--asha-trials 60]

For each space, one baseline (trained once, then loaded as a checkpoint by every search)
and these searches: random, nsga2 (FIFO), nsga2 + mo_asha, tpe + mo_asha, and the grid
where the space is finite. The unit of cost is the fine-tune epoch: a stopped trial
costs the epochs it ran. From the order in which trials finished, each method's
hypervolume (the report's definition, on the feasible front of the trials completed so
far) is traced against the epochs spent so far: an anytime curve, printed as a table at
fractions of nsga2 FIFO's total epochs and drawn to search_efficiency.png. Also printed:
the epochs each method needs to reach 97% of nsga2 FIFO's final hypervolume, and how well
the BatchNorm-recalibrated screening ranks the final accuracy.
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch
from figures import save  # benchmarks/figures.py (scripts run from this folder)
from matplotlib.figure import Figure

from pdsearch.config import parse_config
from pdsearch.reporting.document import screening_correlation
from pdsearch.run.directory import load_run
from pdsearch.run.front import hypervolume, pareto_front
from pdsearch.searching.driver import run_search
from pdsearch.trial.baseline import build_baseline

BASE = {
    "data": {"dataset": "digits", "input_size": 16, "batch_size": 128},
    "model": {"name": "small_cnn"}, "baseline": {"epochs": 15, "lr": 0.05},
    "search": {"objectives": ["accuracy", "flops", "params"], "constraints": {"max_acc_drop": 5}, "seed": 0,
               "population_size": 8},
}
SPACES = {
    "quickstart": {"finetune": {"epochs": 3, "lr": 0.02},
                   "space": {"gpr": {"low": 10, "high": 80, "step": 5}, "pd": [1, 2, 3, 4, 5]},
                   "fidelity": {"min_epochs": 1, "eta": 3}},
    "large": {"finetune": {"epochs": 6, "lr": 0.02},
              "space": {"budget": {"flops_reduction": {"low": 5, "high": 85}},
                        "shape": {"slope": {"low": -1, "high": 1}, "curvature": {"low": -1, "high": 1}},
                        "criteria": ["l1", "fpgm", "taylor"]},
              "fidelity": {"min_epochs": 1, "eta": 3}},
}
METHODS = [("random", "random", "fifo"), ("nsga2", "nsga2", "fifo"), ("nsga2+mo_asha", "nsga2", "mo_asha"),
           ("tpe+mo_asha", "tpe", "mo_asha"), ("grid", "grid", "fifo")]


def config(space: str, checkpoint: str | None, sampler: str, scheduler: str, trials: int):
    s = SPACES[space]
    search = {**BASE["search"], "sampler": sampler, "scheduler": scheduler, "num_trials": trials,
              "fidelity": s["fidelity"]}
    baseline = {**BASE["baseline"], **({"checkpoint": checkpoint} if checkpoint else {})}
    return parse_config({**BASE, "name": f"{space}-{sampler}-{scheduler}", "baseline": baseline,
                         "finetune": s["finetune"], "space": s["space"], "search": search})


def anytime(run_dir: Path) -> pd.DataFrame:
    """Hypervolume of the feasible front of completed trials after each finished trial, against epochs spent."""
    run = load_run(run_dir)
    trials = run.trials[run.trials["status"].isin(["ok", "stopped", "failed"])].sort_values("finished_at")
    objectives, points, done = run.cfg.search.objectives, [], []
    spent = 0.0
    for _, row in trials.iterrows():
        spent += float(row["epochs"])
        if row["status"] == "ok":
            done.append(row)
        front = pareto_front(pd.DataFrame(done), objectives, run.cfg.search.constraints) if done else pd.DataFrame()
        points.append((spent, hypervolume(front, objectives, run.model)))
    return pd.DataFrame(points, columns=["epochs", "hypervolume"])


def at(curve: pd.DataFrame, epochs: float) -> float:
    reached = curve[curve["epochs"] <= epochs + 1e-9]
    return float(reached["hypervolume"].iloc[-1]) if len(reached) else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spaces", default="quickstart,large")
    parser.add_argument("--trials", type=int, default=24, help="trials of the FIFO searches")
    parser.add_argument("--asha-trials", type=int, default=80, help="trials of the mo_asha searches (more trials, fewer epochs each)")
    parser.add_argument("--out", default="search_efficiency.png")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    spaces = args.spaces.split(",")
    fig = Figure(figsize=(6 * len(spaces), 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(spaces)))
    with tempfile.TemporaryDirectory() as tmp:
        for ax, space in zip(axes, spaces):
            first = config(space, None, "nsga2", "fifo", args.trials)
            checkpoint = Path(tmp) / f"{space}-baseline.pt"
            torch.save(build_baseline(first).state_dict, checkpoint)
            curves, screening = {}, {}
            for label, sampler, scheduler in METHODS:
                cfg = config(space, str(checkpoint), sampler, scheduler,
                             args.asha_trials if scheduler == "mo_asha" else args.trials)
                try:
                    run_dir = Path(tmp) / f"{space}-{label}"
                    run_search(cfg, run_dir)
                except Exception as exc:  # the grid of a continuous space: say so and go on
                    print(f"{space}: {label}: skipped ({str(exc).splitlines()[0]})", flush=True)
                    continue
                curves[label] = anytime(run_dir)
                if label == "nsga2":
                    screening = screening_correlation(load_run(run_dir).completed)
                print(f"{space}: {label}: {len(load_run(run_dir).trials)} trials, {curves[label]['epochs'].iloc[-1]:.0f} "
                      f"epochs, final hypervolume {curves[label]['hypervolume'].iloc[-1]:.4f}", flush=True)
            budget = curves["nsga2"]["epochs"].iloc[-1]
            target = 0.97 * curves["nsga2"]["hypervolume"].iloc[-1]
            rows = []
            for label, curve in curves.items():
                reach = curve[curve["hypervolume"] >= target]
                rows.append({"method": label, **{f"HV @{int(f * 100)}% epochs": at(curve, f * budget) for f in (0.25, 0.4, 0.5, 0.75, 1.0)},
                             "epochs to 97% of nsga2 FIFO": f"{reach['epochs'].iloc[0]:.0f} ({100 * reach['epochs'].iloc[0] / budget:.0f}%)" if len(reach) else "not reached",
                             "total epochs": f"{curve['epochs'].iloc[-1]:.0f}"})
                ax.step(curve["epochs"], curve["hypervolume"], where="post", label=label)
            print(f"\n{space}: hypervolume against fine-tune epochs spent (nsga2 FIFO spent {budget:.0f})")
            print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))
            if screening:
                print(f"screening (nsga2 FIFO, {int(screening['n'])} trials): Spearman {screening['screening_spearman']:.3f}, "
                      f"Kendall {screening['screening_kendall']:.3f} (raw pruned accuracy: Spearman "
                      f"{screening['raw_spearman']:.3f}, Kendall {screening['raw_kendall']:.3f})\n", flush=True)
            ax.axvline(budget, color="grey", ls=":", lw=1)
            ax.set(xlabel="fine-tune epochs spent", ylabel="hypervolume", title=f"{space} space")
    save(fig, args.out)


if __name__ == "__main__":
    main()
