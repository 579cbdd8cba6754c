"""Building a latency table on the target: time every layer shape at sampled channels, then calibrate on the whole model.

See ``latency_table`` for the model the measurements feed.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from pdsearch.catalog.runtimes import RUNTIMES
from pdsearch.cost.latency import compare_sessions, session, time_session, torch_threads
from pdsearch.cost.latency_table import STEP, LatencyTable, LayerTable, table_key
from pdsearch.cost.layer_shapes import LayerShape, layer_shapes
from pdsearch.pruning import analyze, prune

Progress = Callable[[str, int, int], None]  # (stage, measured, total): layer samples, then the whole-model anchors


def axis_samples(channels: int, points: int, multiple: int = 1, step: int = STEP) -> tuple[list[int], list[int]]:
    """Channel counts to time: (aligned: multiples of ``step`` and the full count; off: one channel short of those).

    Counts keep ``multiple`` (a grouped conv's groups). Small layers get every step.
    """
    def fit(c: int) -> int:
        return max(multiple, min(channels, c // multiple * multiple))

    stride = max(step, int(np.ceil(channels / max(points - 1, 1) / step)) * step)
    aligned = sorted({fit(c) for c in range(stride, channels, stride)} | {fit(min(step, channels)), channels})
    off = sorted({fit(c - 1) for c in aligned if c > step and c % step == 0} - set(aligned))
    return aligned, off


def _grid_points(shape: LayerShape, points: int, block: int) -> dict[str, tuple[list[int], list[int]]]:
    """(ins, outs) per grid; a depthwise layer's ``block`` (its kernels' channel multiple) is its step."""
    multiple = 1 if shape.depthwise or shape.groups == 1 else shape.groups
    step = max(STEP, block) if shape.depthwise else STEP
    ins_a, ins_o = axis_samples(shape.in_channels, points, multiple, step)
    outs_a, outs_o = axis_samples(shape.out_channels, points, multiple, step)
    if shape.stem:
        ins_a, ins_o = [shape.in_channels], [shape.in_channels]
    if not shape.aligned(shape.in_channels, shape.out_channels, block):  # the table reads it off the block unpruned
        ins_o, outs_o = sorted({*ins_o, shape.in_channels}), sorted({*outs_o, shape.out_channels})
    grids = {"aligned": (ins_a, outs_a), "off": (ins_o or ins_a, outs_o or outs_a)}
    if shape.depthwise:
        grids = {name: ([0], outs) for name, (_, outs) in grids.items()}
    if shape.kind == "se":  # what it costs is the feature map's channels; the squeezed 1x1 ones are noise
        grids = {name: (ins, [shape.out_channels]) for name, (ins, _) in grids.items()}
    if not (ins_o if shape.kind == "se" else ins_o or outs_o):  # nothing off the step to sample
        grids.pop("off")
    return grids


def _layer_session(shape: LayerShape, cin: int, cout: int, runtime: str, batch_size: int, threads: int | None,
                   precision: str = "fp32"):
    cin = cout if shape.depthwise else cin
    return session(runtime, shape.module(cin, cout).eval(), shape.example(cin, batch_size), threads, precision)


def _full_layers_ms(sessions: dict[str, Any], warmup: int, runs: int, rounds: int = 5) -> dict[str, float]:
    """Every layer shape's session at its full channels, timed in interleaved rounds: the weights of the
    layers' tables come from the same moments, so drift on the machine moves them alike."""
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds):
        for key, run in sessions.items():
            times[key].append(time_session(run, warmup if r == 0 else 2, runs).median_ms)
    return {k: float(np.median(v)) for k, v in times.items()}


# The whole-model calibration: homogeneous rates, on STEP (round_to 8) and off it (round_to 1), then
# irregular per-group rates (as sensitivity and loss-aware allocate), each timed against the unpruned model
ANCHORS = ((0.25, STEP), (0.5, STEP), (0.2, 1), (0.35, 1), (0.6, 1))
IRREGULAR_ANCHORS = 6


def irregular_rates(groups: Sequence, rng: np.random.Generator, round_to: int, lowest_cap: float = 0.3
                    ) -> list[float]:
    """Per-group rates drawn below a random cap (in [lowest_cap, 0.8]), as fractions of channels really removed:
    allocations as uneven as sensitivity's and loss-aware's."""
    rates = rng.uniform(0, rng.uniform(lowest_cap, 0.8), len(groups))
    return [g.channels_to_prune(r, round_to) / g.channels for g, r in zip(groups, rates)]


def anchor_rates(groups: Sequence, seed: int = 0) -> list[list[float]]:
    """The anchors' per-group rates (fractions of channels really removed), homogeneous ones first."""
    rng = np.random.default_rng(seed)
    found = [[g.channels_to_prune(rate, round_to) / g.channels for g in groups] for rate, round_to in ANCHORS]
    return found + [irregular_rates(groups, rng, (1, STEP)[i % 2]) for i in range(IRREGULAR_ANCHORS)]


def build_table(model: nn.Module, model_name: str, input_size: int, in_channels: int = 3, *,
                runtime: str = "onnxruntime", threads: int | None = None, batch_size: int = 1, points: int = 6,
                warmup: int = 5, runs: int = 20, anchor_runs: int = 30, report: Progress | None = None,
                precision: str = "fp32") -> LatencyTable:
    """Time every distinct layer shape of ``model`` at sampled channel counts on this machine, then the whole
    model unpruned and at the anchors' rates (the calibration).

    Each sample is timed beside its layer at full channels and kept as a ratio to it; the
    full layers are timed together, in rounds (``_full_layers_ms``). On a shared machine
    whose speed drifts, a table timed point after point mixes moments: the same layer
    timed in two builds differed by 16% (median) this way, and the table by its
    anchors' fit. In a quantized ``precision`` every layer and anchor is quantized as a trial's model is.
    """
    start = time.time()
    example = torch.randn(batch_size, in_channels, input_size, input_size)
    shapes = layer_shapes(model, example[:1])
    unique = {s.key: s for s in shapes.values()}
    block = RUNTIMES[runtime].multiple(precision)
    blocks = {k: RUNTIMES[runtime].multiple(precision, s.depthwise) for k, s in unique.items()}
    plans = {k: _grid_points(s, points, blocks[k]) for k, s in unique.items()}
    structure = analyze(copy.deepcopy(model), input_size, in_channels)
    anchors_rates = anchor_rates(structure.groups)
    total = sum(len(ins) * len(outs) for grids in plans.values() for ins, outs in grids.values())
    done, tables = 0, {}
    with torch_threads(threads):
        whole = session(runtime, model.eval(), example, threads, precision)  # first: a model the runtime cannot take fails now
        full = {k: _layer_session(s, s.in_channels, s.out_channels, runtime, batch_size, threads, precision)
                for k, s in unique.items()}
        full_ms = _full_layers_ms(full, warmup, runs)
        for key, shape in unique.items():
            grids = {}
            for name, (ins, outs) in plans[key].items():
                ms = []
                for cin in ins:
                    row = []
                    for cout in outs:
                        sample = _layer_session(shape, cin, cout, runtime, batch_size, threads, precision)
                        mine, theirs = compare_sessions(sample,
                                                        full[key], warmup, runs, rounds=1)
                        row.append(full_ms[key] * mine.median_ms / theirs.median_ms)
                    ms.append(row)
                    done += len(outs)
                    if report:
                        report("layer measurements", done, total)
                grids[name] = {"ins": ins, "outs": outs, "ms": ms}
            tables[key] = LayerTable(shape, grids, blocks[key])
        baselines, anchors = [], []
        for i, rates in enumerate(anchors_rates):
            pruned = prune(analyze(copy.deepcopy(model), input_size, in_channels), rates).eval()
            mine, theirs = compare_sessions(session(runtime, pruned, example, threads, precision), whole, warmup, anchor_runs,
                                            rounds=5)  # the calibration rests on these: time them longer
            kept = {name: (s.in_channels, s.out_channels) for name, s in layer_shapes(pruned, example[:1]).items()}
            anchors.append((kept, mine.median_ms / theirs.median_ms))
            baselines.append(theirs.median_ms)
            if report:
                report("whole-model anchors", i + 1, len(anchors_rates))
    layers = {name: s.key for name, s in shapes.items()}
    key = table_key(model_name, shapes, input_size, batch_size, runtime, threads, torch.device("cpu"), precision)
    table = LatencyTable(key,
                         layers, tables, float(np.median(baselines)), block)
    table.calibrate(anchors)
    table.seconds = round(time.time() - start, 1)
    return table
