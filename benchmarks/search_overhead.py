"""Engine overhead per trial, and the quickstart's wall time.

    python benchmarks/search_overhead.py [--trials 12]

1. Runs N trials' work directly in this process (prune + fine-tune + evaluate, the same
   run_trial the engine calls), then a search of the same N policies through Ray Tune +
   Optuna on one CPU per trial with concurrency 1, and prints the engine's overhead per
   trial: (search wall - baseline - direct work) / N.
2. Times `pdsearch search search_spaces/quickstart.yaml` end to end (a subprocess, like a
   user), Ray start and baseline training included.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from pdsearch.config import load_config
    from pdsearch.searching.driver import run_search
    from pdsearch.trial.baseline import build_baseline
    from pdsearch.trial.trial import run_trial

    cfg = load_config(ROOT / "search_spaces" / "quickstart.yaml")
    gprs = [10 + 5 * i for i in range(args.trials)]
    cfg = cfg.model_copy(update={
        "search": cfg.search.model_copy(update={"sampler": "grid"}),
        "space": cfg.space.model_copy(update={"gpr": cfg.space.gpr.model_copy(update={"values_": gprs, "low": None, "high": None, "step": None}), "pd": ["PD2"]}),
        "resources": cfg.resources.model_copy(update={"max_concurrent": 1}),
    })
    baseline = build_baseline(cfg, torch.device("cpu"))
    start = time.perf_counter()
    for gpr in gprs:
        run_trial({"gpr": float(gpr), "pd": "PD2"}, cfg, baseline, torch.device("cpu"))
    direct = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_search(cfg, Path(tmp))
        engine = time.perf_counter() - start
    n = len(gprs)
    print(f"{n} trials, 1 at a time, 1 CPU each")
    print(f"direct trial work:        {direct:7.2f} s ({direct / n:.2f} s/trial)")
    print(f"search through Ray+Optuna:{engine:7.2f} s (Ray start + baseline {baseline.seconds:.1f} s included)")
    print(f"engine overhead per trial:{(engine - direct - baseline.seconds) / n:7.2f} s "
          f"(ratio search/direct {engine / direct:.2f})")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pdsearch", "search", str(ROOT / "search_spaces" / "quickstart.yaml"),
                        "--run-dir", tmp], check=True, capture_output=True)
        print(f"quickstart wall time (24 trials, 2 cores): {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
