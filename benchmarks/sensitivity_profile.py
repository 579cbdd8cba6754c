"""What the sensitivity profile costs, before this round's speed-ups and after each, and what they change.

    python benchmarks/sensitivity_profile.py [--models resnet20,small_cnn] [--input-size 16]

The profile as a search measures it (every group at rates 0.1 ... 0.9, loss on 4
held-out training batches; digits, batch 128, one CPU thread as a Ray task with
``resources.cpu: 1`` gets) of a trained baseline (15 epochs), in one run:

- before: the network run whole per measurement (as if torch.fx could not trace the
  model), default memory layout, BatchNorm re-estimated on 10 batches;
- cut at each group's first producer; then in channels_last (both exact);
- after (the default): cut, channels_last, BatchNorm re-estimated on 5 batches.

What "after" changes is set against the measurement's own spread: the same "before"
profile with another seed (other held-out and BatchNorm batches). Each row prints the
largest loss difference and the largest difference of a group's rate in the allocations
read from the profile (``pd: sensitivity``, blend 0) at FLOPs -30 / -50 / -70%.
"""
import argparse
import copy
import time
from contextlib import ExitStack
from unittest import mock

import numpy as np
import torch

from pdsearch.config import parse_config
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.policy.allocators.sensitivity import SensitivitySettings
from pdsearch.trial import channel_switch
from pdsearch.trial import profile as profile_module
from pdsearch.trial.baseline import build_baseline, model_and_data

BUDGETS = (30, 50, 70)


def _whole(self, root):
    raise RuntimeError("run whole")


def profile(model, data, cut: bool = True, channels_last: bool = True, bn_batches: int = 5, seed: int = 0):
    with ExitStack() as stack:
        if not cut:
            stack.enter_context(mock.patch.object(channel_switch._Tracer, "trace", _whole))
        if not channels_last:
            stack.enter_context(mock.patch.object(profile_module, "PROFILE_LAYOUT", torch.contiguous_format))
        start = time.perf_counter()
        result = profile_module.measure_sensitivity(model, data, "l1", SensitivitySettings(bn_batches=bn_batches),
                                             torch.device("cpu"), seed=seed)
        return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet20,small_cnn")
    parser.add_argument("--input-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    assert SensitivitySettings().bn_batches == 5, "'after' is the default measurement"
    print(f"digits at {args.input_size}x{args.input_size}, batch 128, 1 thread, 9 rates, 4 held-out batches")
    print("| model | groups | profile | seconds | speed-up | largest loss difference | largest rate difference "
          f"(FLOPs -{' / -'.join(map(str, BUDGETS))}%) |")
    print("|---|---:|---|---:|---:|---:|---|")
    for name in args.models.split(","):
        cfg = parse_config({"name": "profile", "model": {"name": name, "kwargs": {}},
                            "baseline": {"epochs": 15, "lr": 0.05},
                            "data": {"dataset": "digits", "input_size": args.input_size, "batch_size": 128}})
        model, data = model_and_data(cfg)
        model.load_state_dict(build_baseline(cfg, torch.device("cpu")).state_dict)
        planner = Planner(copy.deepcopy(model), num_classes=10, input_size=args.input_size, in_channels=data.in_channels)
        runs = {
            "before: whole, default layout, BN on 10": profile(model, data, False, False, 10),
            "cut": profile(model, data, True, False, 10),
            "cut, channels_last": profile(model, data, True, True, 10),
            "after: cut, channels_last, BN on 5": profile(model, data),
            "spread: before with seed 1": profile(model, data, True, True, 10, seed=1),  # exact to 'before', faster
        }
        before, before_s = runs["before: whole, default layout, BN on 10"]

        def rates(p, budget):
            return np.array(planner.plan(Policy(budget=budget, pd="sensitivity", options={"blend": 0.0}),
                                         profile=p).rates)
        for label, (p, seconds) in runs.items():
            loss = float(np.abs(np.array(p.loss) - np.array(before.loss)).max())
            moved = " / ".join(f"{np.abs(rates(p, b) - rates(before, b)).max():.3f}" for b in BUDGETS)
            speed = f"{before_s / seconds:.2f}x" if not label.startswith("spread") else ""
            print(f"| {name} | {len(p.groups)} | {label} | {seconds:.1f} | {speed} | {loss:.2g} | {moved} |", flush=True)


if __name__ == "__main__":
    main()
