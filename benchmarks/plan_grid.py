"""Time planning the 9x5 GPR x PD grid, and the 9x5 FLOPs-budget x PD grid, for resnet50 at 224x224 on one core.

    python benchmarks/plan_grid.py [--model resnet50] [--input-size 224]

Prints the one-time analysis (dependency graph + fvcore base count), each grid, and
the total. Planning never prunes a model: the grids are analytic, and a budget is met
by bisection plus one-channel moves on the analytic cost (the worst miss is printed).
"""
import argparse
import os
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    from pdsearch.planning import Planner

    start = time.perf_counter()
    planner = Planner(args.model, num_classes=1000, input_size=args.input_size)
    analysed = time.perf_counter()
    table = planner.grid(range(10, 100, 10), [1, 2, 3, 4, 5])
    done = time.perf_counter()
    budgets = planner.grid(flops_reductions=range(10, 100, 10), pds=[1, 2, 3, 4, 5])
    solved = time.perf_counter()
    assert len(table) == len(budgets) == 45
    met = budgets[budgets["error"] == ""]
    worst = (met["flops_reduction_pct"] - met["budget"]).abs().max()
    print(f"model {args.model} @ {args.input_size}x{args.input_size}, 1 core, {len(planner.groups)} channel groups")
    print(f"analysis (graph + fvcore base count): {analysed - start:.3f} s")
    print(f"GPR grid of {len(table)} policies:         {done - analysed:.3f} s ({1000 * (done - analysed) / len(table):.2f} ms/policy)")
    print(f"FLOPs-budget grid of {len(budgets)} policies: {solved - done:.3f} s ({1000 * (solved - done) / len(budgets):.2f} ms/policy); "
          f"{len(met)} reachable, worst miss {worst:.3f} points")
    print(f"total planning:                       {solved - start:.3f} s")


if __name__ == "__main__":
    main()
