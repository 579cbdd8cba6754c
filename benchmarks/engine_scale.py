"""The engine's overhead per trial at the start and the end of a long search.

    python benchmarks/engine_scale.py [--trials 2000] [--window 200] [--sampler random]

Runs N trivial trials (no fine-tuning, 8x8 digits, a 4-channel CNN, one at a time) through
the real search: Optuna sampler, searcher, Ray Tune, trials.csv, the study in SQLite.
Overhead per trial over a window of consecutive trials = the wall time the window took
(first to last completion) per trial, minus the trials' own mean time. Prints it for the
first and the last ``window`` trials and their ratio: recording and bookkeeping must not
grow with the trials so far.
"""
import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from pdsearch.config import parse_config
from pdsearch.searching.driver import run_search


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--sampler", default="random")
    args = parser.parse_args()
    cfg = parse_config({
        "name": "engine_scale", "data": {"dataset": "digits", "input_size": 8, "batch_size": 512},
        "model": {"name": "small_cnn", "kwargs": {"width": 4}}, "baseline": {"epochs": 1},
        "finetune": {"epochs": 0},
        "space": {"gpr": {"low": 0, "high": 80}, "pd": [1, 2, 3, 4, 5]},
        "search": {"sampler": args.sampler, "num_trials": args.trials},
        "resources": {"cpu": 1, "max_concurrent": 1},
    })
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        run_search(cfg, Path(tmp) / "run")
        wall = time.time() - start
        trials = pd.read_csv(Path(tmp) / "run" / "trials.csv")
    trials = trials[trials["status"] == "ok"].sort_values("finished_at")
    finished = (pd.to_datetime(trials["finished_at"]) - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    seconds = trials["seconds"].to_numpy()

    def overhead(window: slice) -> float:
        t, s = finished[window], seconds[window]
        return (t[-1] - t[0]) / (len(t) - 1) - s[1:].mean()

    first, last = overhead(slice(1, args.window + 1)), overhead(slice(-args.window, None))  # trial 0 loads the data
    print(f"{len(trials)} trials ({args.sampler} sampler, one at a time) in {wall:.0f} s; "
          f"a trial itself: median {1000 * float(pd.Series(seconds).median()):.0f} ms")
    print(f"engine overhead per trial: first {args.window}: {first * 1000:.1f} ms, "
          f"last {args.window}: {last * 1000:.1f} ms, ratio last/first {last / first:.2f}")


if __name__ == "__main__":
    main()
