"""Every allocator at equal FLOPs budgets, on the quickstart model and resnet20 (digits, CPU).

    python benchmarks/allocators.py [--budgets 50,70,85] [--models small_cnn,resnet20] [--epochs 3]

For each model: trains (or reuses, within this run) the baseline, measures the
sensitivity profile once, then runs one trial per allocator and budget exactly as the
search does (run_trial: allocate, prune, BN as trained, fine-tune, evaluate). Prints
accuracy before and after fine-tuning, the FLOPs reduction reached and the allocation
time of each, and the profile's own time.
"""
import argparse
import time

import pandas as pd
import torch
from digits import digits_config, parse_digits_args

from pdsearch.trial.baseline import build_baseline
from pdsearch.trial.profile import compute_profile
from pdsearch.trial.trial import run_trial

PDS = ["PD1", "PD2", "PD3", "PD4", "PD5", "sensitivity", "loss_aware"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3, help="fine-tune epochs per trial")
    args, budgets = parse_digits_args(parser)
    cpu = torch.device("cpu")
    rows = []
    for model in args.models.split(","):
        cfg = digits_config(f"allocators-{model}", model, budgets, PDS, epochs=args.epochs)
        start = time.perf_counter()
        baseline = build_baseline(cfg, cpu)
        trained = time.perf_counter()
        profile = compute_profile(cfg, baseline, cpu)
        profiled = time.perf_counter()
        print(f"{model}: baseline val {baseline.val_accuracy:.2f}% ({trained - start:.0f} s), "
              f"sensitivity profile {profiled - trained:.1f} s (once per baseline)", flush=True)
        for budget in budgets:
            for pd_name in PDS:
                m = run_trial({"budget": budget, "pd": pd_name}, cfg, baseline, cpu, profile)
                rows.append({"model": model, "budget": budget, "pd": pd_name, "status": m["status"],
                             "flops_red": m["flops_reduction_pct"], "before_ft": m["accuracy_before_finetune"],
                             "after_ft": m["accuracy"], "drop": m["acc_drop"], "alloc_s": m["allocation_seconds"],
                             "trial_s": m["seconds"]})
                print(f"  {budget:g}% {pd_name:<12} {m['status']:<6} FLOPs -{m['flops_reduction_pct']:.2f}%  "
                      f"before {m['accuracy_before_finetune']:.2f}%  after {m['accuracy']:.2f}%  "
                      f"alloc {m['allocation_seconds']:.2f} s", flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_markdown(index=False, floatfmt=".2f"))
    print("\nafter fine-tuning, by budget (rows) and allocator (columns):")
    for model, part in table.groupby("model", sort=False):
        print(f"\n{model}")
        print(part.pivot(index="budget", columns="pd", values="after_ft")[PDS].to_markdown(floatfmt=".2f"))


if __name__ == "__main__":
    main()
