"""A plugin adding one entry to every registry (two runtimes: one absent), as a user's own module would (``plugins: [registry_plugin]``).

Each addition is one entry (plus what it names): nothing in pdsearch is edited.
tests/ is on the Ray workers' path, so trials import it as the driver does.
"""
import dataclasses

import numpy as np
import optuna
import torch
import torch_pruning as tp
from ray.tune.schedulers import FIFOScheduler
from torch import nn

from pdsearch.catalog.objectives import OBJECTIVES, Constraint, Objective
from pdsearch.catalog.precisions import PRECISIONS, RECIPES, Precision, Recipe
from pdsearch.catalog.runtimes import RUNTIMES, Runtime
from pdsearch.catalog.samplers import SAMPLERS, Sampler
from pdsearch.catalog.schedulers import SCHEDULERS, Scheduler
from pdsearch.cost.latency import torch_session
from pdsearch.data import DATASETS, Dataset
from pdsearch.data.bundle import TensorSplit
from pdsearch.data.loaders import digits
from pdsearch.models import register_model
from pdsearch.policy.allocators import Allocator, register
from pdsearch.policy.criteria import CRITERIA, Criterion
from pdsearch.policy.solve import bisect

CALLS = {"sampler": 0, "scheduler": 0}  # what ran in the driver's process


@register
class ShallowFirst(Allocator):
    """Prunes the shallower half of the network twice as hard as the deeper half."""

    name = "shallow_first"

    def rates(self, policy, problem):
        weights = np.where(problem.positions <= 0.5, 1.0, 0.5)
        _, rates = bisect(lambda t: np.clip(t * policy.max_rate * weights, 0, policy.max_rate), problem.goal(policy),
                          problem.space)
        return rates


OBJECTIVES["screening"] = Objective(
    "screening", "accuracy_before_finetune", "max", "screening accuracy (%)", loss=lambda v, base: 1 - v / 100,
    reference=lambda base: "accuracy 0 %", worst=lambda base: 0.0,
    constraint=Constraint("screening_drop", "max_screening_drop", "screening drop", "acc_drop", " pts", "<=",
                          percent=False, evolves=True))


class CountingQMC(optuna.samplers.QMCSampler):
    def sample_relative(self, *args, **kwargs):
        CALLS["sampler"] += 1
        return super().sample_relative(*args, **kwargs)


SAMPLERS["counting_qmc"] = Sampler(lambda cfg, grid: CountingQMC(seed=cfg.search.seed, warn_independent_sampling=False))


class CountingFIFO(FIFOScheduler):
    def on_trial_result(self, tune_controller, trial, result):
        CALLS["scheduler"] += 1
        return super().on_trial_result(tune_controller, trial, result)


def counting_fifo(cfg):
    return CountingFIFO()


SCHEDULERS["counting_fifo"] = Scheduler("registry_plugin:counting_fifo")


def transposed_digits(cfg):
    """The embedded digits, each image transposed: another dataset with the same on-disk nothing."""
    bundle = digits(cfg)
    flip = lambda s: TensorSplit(s.x.transpose(-1, -2).contiguous(), s.y)  # noqa: E731
    return dataclasses.replace(bundle, name="transposed_digits", train=flip(bundle.train), val=flip(bundle.val),
                               test=flip(bundle.test))


DATASETS["transposed_digits"] = Dataset("registry_plugin:transposed_digits", needs_root=False)


class LargestWeightImportance(tp.importance.Importance):
    """A filter matters as much as its largest weight (L-infinity)."""

    def __call__(self, group) -> torch.Tensor:
        root = group[0].dep.target.module
        return root.weight.detach()[[int(i) for i in group[0].idxs]].flatten(1).abs().amax(dim=1)


CRITERIA["linf"] = Criterion("registry_plugin:LargestWeightImportance")


def twice_session(model, batch, threads=None):
    """A runtime that runs eager PyTorch twice per call: measured latency doubles, ratios stay."""
    run = torch_session(model, batch, threads)
    return lambda: (run(), run())[1]


RUNTIMES["torch_twice"] = Runtime("torch_twice", "registry_plugin:twice_session")
RUNTIMES["edge_npu"] = Runtime("edge_npu", "edge_npu_sdk:session", requires="edge_npu_sdk", extra="edge")  # absent
PRECISIONS["npu_int4"] = Precision("npu_int4", "INT4", {"edge_npu": "edge_npu_sdk:int4_session"},
                                   deploy="edge_npu_sdk:quantize_int4", requires="edge_npu_sdk", extra="edge")  # absent
RECIPES["entropy"] = Recipe("entropy", "as minmax, activation ranges by KL divergence", calibrate_method="Entropy")


@register_model
def plugin_net(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )

from pdsearch.catalog.trackers import TRACKERS, Tracker  # noqa: E402

TRACKERS["neptune"] = Tracker("neptune_tracker:Session", requires="neptune", extra="neptune")  # not installed here
