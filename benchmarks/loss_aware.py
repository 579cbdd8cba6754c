"""What loss-aware allocation costs against the rest of its trial, and what it buys (digits, one CPU).

    python benchmarks/loss_aware.py [--models small_cnn,resnet20] [--budgets 50,70,85] [--seeds 0,1,2]
                                    [--settings '{}' '{"retrain_every": 20}' ...]

Each trial runs as the search runs it (run_trial: allocate, prune, screen, 3-epoch
fine-tune) with one CPU thread, as a trial with ``resources.cpu: 1`` gets. Prints the
allocation seconds, the rest of the trial, their ratio, and the accuracy after
fine-tuning; then the mean ± std over seeds per model, budget and settings (each
``--settings`` JSON is a variant of the loss_aware settings, on the same baseline).
"""
import argparse
import json

import pandas as pd
import torch
from digits import digits_config, parse_digits_args

from pdsearch.trial.baseline import build_baseline
from pdsearch.trial.trial import run_trial


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=["{}"], help="loss_aware settings (JSON) over the defaults")
    args, budgets = parse_digits_args(parser)
    cpu = torch.device("cpu")
    rows = []
    for model in args.models.split(","):
        variants = [digits_config(f"loss-aware-{model}", model, budgets, ["loss_aware"],
                                  allocators={"loss_aware": json.loads(text)}, epochs=args.epochs)
                    for text in args.settings]
        baseline = build_baseline(variants[0], cpu)
        print(f"{model}: baseline val {baseline['val_accuracy']:.2f}%", flush=True)
        for text, cfg in zip(args.settings, variants):
            for budget in budgets:
                for seed in [int(s) for s in args.seeds.split(",")]:
                    m = run_trial({"budget": budget, "pd": "loss_aware", "seed": seed}, cfg, baseline, cpu)
                    rest = m["seconds"] - m["allocation_seconds"]
                    rows.append({"model": model, "settings": text, "budget": budget, "seed": seed,
                                 "alloc_s": m["allocation_seconds"], "rest_s": rest,
                                 "ratio": m["allocation_seconds"] / rest, "accuracy": m["accuracy"],
                                 "flops_red": m["flops_reduction_pct"]})
                    print(f"  {text} {budget:g}% seed {seed}: alloc {m['allocation_seconds']:.1f} s, "
                          f"rest {rest:.1f} s, "
                          f"ratio {rows[-1]['ratio']:.2f}, accuracy {m['accuracy']:.2f}%, "
                          f"FLOPs -{m['flops_reduction_pct']:.2f}%", flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby(["model", "settings", "budget"], sort=False).agg(
        alloc_s=("alloc_s", "mean"), rest_s=("rest_s", "mean"), ratio=("ratio", "mean"),
        accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"))
    print()
    print(summary.to_markdown(floatfmt=".2f"))


if __name__ == "__main__":
    main()
