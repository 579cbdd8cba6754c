"""Analytic cost prediction vs fvcore's count of the really pruned model.

    python benchmarks/cost_agreement.py

For each architecture and two policies, prints the relative error of predicted FLOPs
and params against fvcore counting the model after real Torch-Pruning pruning.
"""
import copy

import torch

from pdsearch.cost import count_cost
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune

MODELS = [
    ("resnet20", 32), ("resnet56", 32), ("resnet18", 224), ("resnet50", 224), ("vgg16", 224), ("vgg16_bn", 224),
    ("alexnet", 224), ("mobilenet_v2", 224), ("densenet121", 224), ("efficientnet_b0", 224), ("regnet_x_400mf", 224),
]


def main() -> None:
    torch.set_num_threads(2)
    print(f"{'model':<16} {'policy':<10} {'fvcore FLOPs':>14} {'err FLOPs':>10} {'fvcore params':>14} {'err params':>10}")
    worst = 0.0
    for name, size in MODELS:
        planner = Planner(name, input_size=size)
        for policy in (Policy(gpr=30, pd="PD2"), Policy(gpr=60, pd="PD4")):
            rates = planner.rates(policy)
            flops, params = planner.cost(rates)
            structure = analyze(copy.deepcopy(planner.structure.model), size)
            counted = count_cost(prune(structure, rates), structure.example_input)
            ef = 100 * (flops - counted.flops) / counted.flops
            ep = 100 * (params - counted.params) / counted.params
            worst = max(worst, abs(ef), abs(ep))
            print(f"{name:<16} {policy.label + ' ' + format(policy.gpr, 'g'):<10} {counted.flops:>14,} {ef:>+9.4f}% {counted.params:>14,} {ep:>+9.4f}%")
    print(f"worst absolute error: {worst:.4f}%")


if __name__ == "__main__":
    main()
