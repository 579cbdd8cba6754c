"""The driver's checks before Ray starts, and its refusals: each a one-line error, nothing launched.

A failure that is a property of the config or the policy is found here, in seconds, rather
than as N failed trials: an unreachable budget, a space the sampler cannot take, a model
that cannot be pruned, a latency table of another target, a folder that already holds a
search, a baseline that learnt nothing, Tune state of an earlier version.
"""
from __future__ import annotations

import copy
import importlib.util
import pickletools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pdsearch.catalog.precisions import PRECISIONS
from pdsearch.config import SearchConfig
from pdsearch.cost.latency_table import LatencyTable
from pdsearch.errors import PdsearchError
from pdsearch.planning import Planner
from pdsearch.pruning import check_prunable
from pdsearch.registry import resolve
from pdsearch.run.directory import LATENCY_TABLE, TRIALS_CSV
from pdsearch.searching.addresses import check_addresses
from pdsearch.space import SearchSpace
from pdsearch.trial.baseline import Baseline, load_checkpoint, model_and_data


def preflight(space: SearchSpace, run_dir: Path | None = None) -> dict[str, Any]:
    """Build the model, load the data and plan one policy on the driver, in seconds.

    Returns what model.json records: the model's prunable layers and base cost.
    """
    cfg = space.cfg
    space.sampler()
    model, data = model_and_data(cfg)
    check_addresses(cfg, run_dir or Path("."))  # the study's database, Tune's storage, the trackers
    table = target_table(cfg, data.input_size, run_dir)
    planner = Planner(model, input_size=data.input_size, in_channels=data.in_channels, latency_table=table)
    planner.check(space.policy(space.first()), settings=cfg.space.settings())
    check_prunable(planner.structure)
    check_deployable(cfg, planner.structure.model, planner.structure.example_input)
    if cfg.baseline.checkpoint:
        if distils(cfg) and not Path(cfg.baseline.checkpoint).is_file():
            raise PdsearchError(f"finetune.distill distils from the baseline, and baseline.checkpoint "
                                f"{cfg.baseline.checkpoint} does not exist")
        load_checkpoint(model, cfg.baseline.checkpoint, cfg.baseline.trust_checkpoint)
    base = planner.cost_model.base
    return {
        "name": cfg.model.name, "input_size": data.input_size, "in_channels": data.in_channels,
        "num_classes": data.num_classes, "flops": base.flops, "params": base.params,
        "layers": [{"name": g.name, "position": round(g.position, 4), "channels": g.channels} for g in planner.groups],
    }


def check_deployable(cfg: SearchConfig, model: nn.Module, example: torch.Tensor) -> None:
    """Each quantized precision the space ships in, tried on the unpruned model: an operator the quantizer
    cannot take is found on the driver, not in every trial."""
    for name in cfg.space.precision:
        deploy = PRECISIONS[name].deploy
        if deploy is not None:
            resolve(deploy)(copy.deepcopy(model).eval(), example, [example], cfg.quantization.recipe)


def target_table(cfg: SearchConfig, data_input_size: int, run_dir: Path | None = None) -> LatencyTable | None:
    """latency.table (the run's copy once it has one), refused when built for another input size, batch size,
    runtime, precision or thread count."""
    lat = cfg.latency
    if lat.table is None:
        return None
    copy = None if run_dir is None else run_dir / LATENCY_TABLE
    path = copy if copy is not None and copy.is_file() else Path(lat.table)
    table = LatencyTable.load(path)
    table.check({"input_size": lat.input_size or data_input_size, "batch_size": lat.batch_sizes[0],
                 "runtime": lat.runtime, "precision": cfg.space.precision[0], "threads": lat.threads},
                f"latency table {str(path)!r}")
    return table


def distils(cfg: SearchConfig) -> bool:
    """Whether any trial of the search fine-tunes with the baseline as its teacher."""
    return any(w > 0 for w in (cfg.space.distill or [cfg.finetune.distill.weight]))


def refuse_a_second_search(run_dir: Path) -> None:
    if (run_dir / TRIALS_CSV).exists():
        raise PdsearchError(f"run directory {run_dir} already holds a search: continue it with "
                            f"pdsearch resume {run_dir}, or start afresh with a new --run-dir")


CHANCE_MARGIN = 5.0  # points above chance (100 / classes) a baseline must reach to be searched


def refuse_a_weak_baseline(cfg: SearchConfig, baseline: Baseline, num_classes: int) -> None:
    """A baseline that learnt (almost) nothing gives a front of noise: stop before any trial, unless told not to."""
    chance, accuracy = 100.0 / num_classes, float(baseline.val_accuracy)
    if accuracy < chance + CHANCE_MARGIN and not cfg.baseline.allow_weak:
        raise PdsearchError(
            f"the baseline learnt almost nothing: validation accuracy {accuracy:.1f}% against {chance:.1f}% for "
            f"chance ({num_classes} classes; below chance + {CHANCE_MARGIN:g} points is not searched): train it "
            "longer (baseline.epochs, baseline.lr), load a trained baseline.checkpoint, or set "
            "baseline.allow_weak: true to search it anyway")


def stale_modules(experiment: Path) -> list[str]:
    """pdsearch modules that Ray Tune's pickled state names but this version no longer has."""
    names: set[str] = set()
    for path in experiment.glob("*.pkl"):
        for op, arg, _ in pickletools.genops(path.read_bytes()):
            if isinstance(arg, str):  # (STACK_GLOBAL's module names are strings; GLOBAL's are "module name")
                name = arg.split(" ")[0]
                if name.startswith("pdsearch.") and name.replace(".", "").replace("_", "").isalnum():
                    names.add(name)
    return sorted(name for name in names if importlib.util.find_spec(name) is None)


def refuse_state_of_an_earlier_version(run_dir: Path, experiment: Path) -> None:
    stale = stale_modules(experiment)
    if stale:
        raise PdsearchError(
            f"{run_dir} was written by an earlier pdsearch (its Ray Tune state names {stale[0]}, which this version "
            f"does not have): report, select and dashboard still read it; to search on, start a new search with "
            f"another --run-dir")
