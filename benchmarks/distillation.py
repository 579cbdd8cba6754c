"""Does distilling from the baseline recover more accuracy per fine-tune epoch? (digits 16×16, one CPU)

    python benchmarks/distillation.py [--models small_cnn,resnet20] [--budgets 70,85] [--pds PD3,sensitivity]
                                      [--epochs 1,3,9] [--seeds 0,1,2] [--weight 0.5] [--temperature 4]

Each cell runs the trial as the search does (run_trial: allocate, prune, screen,
fine-tune) with distillation off and on, over the seeds; prints mean ± std of the
validation accuracy, the gain, whether the gain exceeds the seeds' spread (the larger
of the two stds), and the extra seconds per fine-tune epoch the teacher costs.
"""
import argparse
import time

import pandas as pd
import torch
from digits import digits_config, parse_digits_args

from pdsearch.trial.baseline import build_baseline
from pdsearch.trial.profile import compute_profile
from pdsearch.trial.trial import run_trial


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pds", default="PD3,sensitivity")
    parser.add_argument("--epochs", default="1,3,9")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    args, budgets = parse_digits_args(parser, budgets="70,85")
    cpu = torch.device("cpu")
    pds = args.pds.split(",")
    rows = []
    for model in args.models.split(","):
        base_cfg = digits_config(f"distill-{model}", model, budgets, pds, distill={"temperature": args.temperature})
        baseline = build_baseline(base_cfg, cpu)
        profile = compute_profile(base_cfg, baseline, cpu) if "sensitivity" in pds else None
        print(f"{model}: baseline val {baseline.val_accuracy:.2f}%", flush=True)
        for epochs in [int(e) for e in args.epochs.split(",")]:
            cfg = base_cfg.model_copy(update={"finetune": base_cfg.finetune.model_copy(update={"epochs": epochs})})
            for budget in budgets:
                for pd_name in pds:
                    for seed in [int(s) for s in args.seeds.split(",")]:
                        for weight in (0.0, args.weight):
                            start = time.perf_counter()
                            m = run_trial({"budget": budget, "pd": pd_name, "seed": seed}, cfg.with_distill(weight),
                                          baseline, cpu, profile)
                            rows.append({"model": model, "budget": budget, "pd": pd_name, "epochs": epochs,
                                         "seed": seed, "distill": weight, "accuracy": m["accuracy"],
                                         "seconds_per_epoch": (time.perf_counter() - start - m["allocation_seconds"])
                                         / epochs})
                    done = pd.DataFrame(rows[-2 * len(args.seeds.split(",")):])
                    means = done.groupby("distill")["accuracy"].mean()
                    print(f"  {epochs} ep, -{budget:g}% {pd_name}: off {means.iloc[0]:.2f}, on {means.iloc[-1]:.2f}",
                          flush=True)
    table = pd.DataFrame(rows)
    keys = ["model", "budget", "pd", "epochs"]
    off = table[table["distill"] == 0].groupby(keys, sort=False)
    on = table[table["distill"] > 0].groupby(keys, sort=False)
    summary = pd.DataFrame({
        "off": off["accuracy"].mean().map("{:.2f}".format) + " ± " + off["accuracy"].std().map("{:.2f}".format),
        "on": on["accuracy"].mean().map("{:.2f}".format) + " ± " + on["accuracy"].std().map("{:.2f}".format),
        "gain": (on["accuracy"].mean() - off["accuracy"].mean()).round(2),
        "spread": pd.concat([off["accuracy"].std(), on["accuracy"].std()], axis=1).max(axis=1).round(2),
        "extra_s_per_epoch": (on["seconds_per_epoch"].mean() - off["seconds_per_epoch"].mean()).round(3),
        "overhead_pct": (100 * (on["seconds_per_epoch"].mean() / off["seconds_per_epoch"].mean() - 1)).round(1),
    })
    summary["wins"] = summary["gain"] > summary["spread"]
    print(f"\nvalidation accuracy after fine-tuning, distillation off vs on (weight {args.weight:g}, "
          f"temperature {args.temperature:g}), mean ± std over seeds {args.seeds}:\n")
    print(summary.reset_index().to_markdown(index=False))
    print(f"\ndistillation wins by more than the seeds' spread in {int(summary['wins'].sum())} of {len(summary)} "
          f"settings; it loses by more in {int((summary['gain'] < -summary['spread']).sum())}")


if __name__ == "__main__":
    main()
