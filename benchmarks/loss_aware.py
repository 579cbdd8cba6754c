"""What loss-aware allocation costs against the rest of its trial, and what it buys (digits, one CPU).

    python benchmarks/loss_aware.py [--models small_cnn,resnet20] [--budgets 50,70,85] [--seeds 0,1,2]
                                    [--settings '{}' '{"retrain_every": 20}' ...]

Each trial runs as the search runs it (run_trial: allocate, prune, screen, 3-epoch
fine-tune) with one CPU thread, as a trial with ``resources.cpu: 1`` gets, twice: with a
direct allocation (the greedy run to its own budget, as every trial paid before), and
reading the run's greedy path (``pdsearch.trial.loss_path``: measured once per seed, to
the largest budget, as the search does before its first trial). Prints per trial the
allocation seconds both ways, the rest of the trial and the accuracy (the same both
ways: the path's prefix is the direct allocation); then per model, budget and settings
the mean over seeds, and what the path costs once against the rest of the trials that
share it.
"""
import argparse
import json
import time

import pandas as pd
import torch
from digits import digits_config, parse_digits_args

from pdsearch.trial.baseline import build_baseline
from pdsearch.trial.loss_path import compute_paths
from pdsearch.trial.trial import run_trial


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=["{}"], help="loss_aware settings (JSON) over the defaults")
    args, budgets = parse_digits_args(parser)
    seeds = [int(s) for s in args.seeds.split(",")]
    cpu = torch.device("cpu")
    rows, paths_s = [], []
    for model in args.models.split(","):
        variants = [digits_config(f"loss-aware-{model}", model, budgets, ["loss_aware"],
                                  allocators={"loss_aware": json.loads(text)}, epochs=args.epochs)
                    for text in args.settings]
        baseline = build_baseline(variants[0], cpu)
        print(f"{model}: baseline val {baseline.val_accuracy:.2f}%", flush=True)
        for text, cfg in zip(args.settings, variants):
            for seed in seeds:
                start = time.perf_counter()
                paths = compute_paths(cfg.model_copy(update={"space": cfg.space.model_copy(update={"seeds": [seed]})}),
                                      baseline, device=cpu)
                path_s = time.perf_counter() - start
                rest_total = 0.0
                for budget in budgets:
                    params = {"budget": budget, "pd": "loss_aware", "seed": seed}
                    direct = run_trial(params, cfg, baseline, cpu)
                    read = run_trial(params, cfg, baseline, cpu, loss_paths=paths)
                    assert read["rates"] == direct["rates"] and read["criteria"] == direct["criteria"]
                    rest = direct["seconds"] - direct["allocation_seconds"]
                    rest_total += rest
                    rows.append({"model": model, "settings": text, "budget": budget, "seed": seed,
                                 "direct_alloc_s": direct["allocation_seconds"], "rest_s": rest,
                                 "direct_ratio": direct["allocation_seconds"] / rest,
                                 "read_alloc_s": read["allocation_seconds"], "accuracy": direct["accuracy"],
                                 "flops_red": direct["flops_reduction_pct"]})
                    print(f"  {text} {budget:g}% seed {seed}: direct allocation {direct['allocation_seconds']:.1f} s, "
                          f"from the path {read['allocation_seconds']:.3f} s, rest {rest:.1f} s, "
                          f"ratio {rows[-1]['direct_ratio']:.2f}, accuracy {direct['accuracy']:.2f}%, "
                          f"FLOPs -{direct['flops_reduction_pct']:.2f}%", flush=True)
                paths_s.append({"model": model, "settings": text, "seed": seed, "path_s": path_s,
                                "rest_of_its_trials_s": rest_total, "ratio": path_s / rest_total})
                print(f"  {text} seed {seed}: the path to {max(budgets):g}% in {path_s:.1f} s, against "
                      f"{rest_total:.1f} s for the rest of its {len(budgets)} trials", flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby(["model", "settings", "budget"], sort=False).agg(
        direct_alloc_s=("direct_alloc_s", "mean"), read_alloc_s=("read_alloc_s", "mean"), rest_s=("rest_s", "mean"),
        direct_ratio=("direct_ratio", "mean"), accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"))
    print()
    print(summary.to_markdown(floatfmt=".3f"))
    print()
    print("The path, once per seed, against the rest of the trials that read it:")
    print(pd.DataFrame(paths_s).groupby(["model", "settings"], sort=False).mean(numeric_only=True)
          .drop(columns="seed").to_markdown(floatfmt=".2f"))


if __name__ == "__main__":
    main()
