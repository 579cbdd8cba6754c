"""What the sensitivity profile costs, before and after: whole per measurement, or only after each group's cut.

    python benchmarks/sensitivity_profile.py [--models resnet20,mobilenet_v2] [--input-size 32]

The profile as a search measures it (every group at rates 0.1 ... 0.9, loss on 4
held-out batches; digits, batch 128, one CPU thread as a Ray task with ``resources.cpu:
1`` gets), three times in one run: *before*, the network run whole per measurement with
BatchNorm re-estimated on 10 batches (as if fx could not trace it); *cut*, the same
measurement run only after each group's first producer (torch.fx), which must give the
same profile; *after*, the cut with today's 5 re-estimation batches. Prints the times,
the speed-ups and the largest loss difference from *before*. The weights are untrained:
the cost does not depend on them (benchmarks/allocators.py measures what the rates buy).
"""
import argparse
import time

import numpy as np
import torch

from pdsearch.config import parse_config
from pdsearch.policy.allocators.sensitivity import SensitivitySettings
from pdsearch.trial import probing
from pdsearch.trial.baseline import model_and_data


def profile(model, data, untraceable: bool, bn_batches: int):
    original = probing._Tracer.trace
    if untraceable:
        probing._Tracer.trace = lambda self, root: (_ for _ in ()).throw(RuntimeError("whole"))
    try:
        start = time.perf_counter()
        result = probing.measure_sensitivity(model, data, "l1", SensitivitySettings(bn_batches=bn_batches),
                                              torch.device("cpu"))
        return result, time.perf_counter() - start
    finally:
        probing._Tracer.trace = original


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--input-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"digits at {args.input_size}x{args.input_size}, batch 128, 1 thread, 9 rates, 4 held-out batches")
    print("| model | groups | before: whole, 10 BN batches (s) | cut, 10 (s) | after: cut, 5 (s) | cut speed-up "
          "| after speed-up | cut's largest loss difference | after's |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        cfg = parse_config({"name": "profile", "model": {"name": name, "kwargs": {}},
                            "data": {"dataset": "digits", "input_size": args.input_size, "batch_size": 128}})
        model, data = model_and_data(cfg)
        whole, whole_s = profile(model, data, untraceable=True, bn_batches=10)
        cut, cut_s = profile(model, data, untraceable=False, bn_batches=10)
        after, after_s = profile(model, data, untraceable=False, bn_batches=5)
        diff = [float(np.abs(np.array(p.loss) - np.array(whole.loss)).max()) for p in (cut, after)]
        print(f"| {name} | {len(cut.groups)} | {whole_s:.1f} | {cut_s:.1f} | {after_s:.1f} | {whole_s / cut_s:.2f}x "
              f"| {whole_s / after_s:.2f}x | {diff[0]:.2g} | {diff[1]:.2g} |", flush=True)


if __name__ == "__main__":
    main()
