"""What the sensitivity profile costs: the network run whole per measurement, or only after each group's cut.

    python benchmarks/sensitivity_profile.py [--models resnet20,small_cnn] [--input-size 16]

The profile as a search measures it (every group at rates 0.1 ... 0.9, BatchNorm
re-estimated on 10 training batches, loss on 4 held-out ones; digits, batch 128, one CPU
thread as a Ray task with ``resources.cpu: 1`` gets), twice in one run: whole (as if
torch.fx could not trace the model: what every measurement ran before) and cut at each
group's first producer (the default). Prints both times, the speed-up and the largest
difference between the two profiles' losses. The weights are untrained: the cost does
not depend on them.
"""
import argparse
import time

import numpy as np
import torch

from pdsearch.config import parse_config
from pdsearch.policy.allocators.sensitivity import SensitivitySettings
from pdsearch.trial import probing
from pdsearch.trial.baseline import model_and_data


def profile(model, data, whole: bool):
    original = probing._Tracer.trace
    if whole:
        probing._Tracer.trace = lambda self, root: (_ for _ in ()).throw(RuntimeError("run whole"))
    try:
        start = time.perf_counter()
        result = probing.measure_sensitivity(model, data, "l1", SensitivitySettings(), torch.device("cpu"))
        return result, time.perf_counter() - start
    finally:
        probing._Tracer.trace = original


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet20,small_cnn")
    parser.add_argument("--input-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"digits at {args.input_size}x{args.input_size}, batch 128, 1 thread, 9 rates, 10 + 4 batches")
    print("| model | groups | whole (s) | cut (s) | speed-up | largest loss difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        cfg = parse_config({"name": "profile", "model": {"name": name, "kwargs": {}},
                            "data": {"dataset": "digits", "input_size": args.input_size, "batch_size": 128}})
        model, data = model_and_data(cfg)
        whole, whole_s = profile(model, data, whole=True)
        cut, cut_s = profile(model, data, whole=False)
        diff = float(np.abs(np.array(cut.loss) - np.array(whole.loss)).max())
        print(f"| {name} | {len(cut.groups)} | {whole_s:.1f} | {cut_s:.1f} | {whole_s / cut_s:.2f}x | {diff:.2g} |",
              flush=True)


if __name__ == "__main__":
    main()
