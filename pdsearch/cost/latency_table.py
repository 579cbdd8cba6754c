"""A latency model of the deployment target: per-layer tables over kept channels, calibrated on the whole model.

FLOPs do not say what a runtime on a device will take (channel counts off the kernels'
preferred multiple can run slower with fewer FLOPs), and trials run on training nodes,
not on the target. So, as NetAdapt and HALP do, latency is *measured on the target*,
once, per layer: every conv and linear layer shape of the model is built alone (conv +
BN + ReLU, which a runtime fuses) and timed on the target runtime at sampled input and
output channel counts, on multiples of 8 and one channel short of them. A policy's
latency is the baseline's, plus the change of the layers' summed table read at the
channels the policy keeps (interpolated between samples of the same alignment), times a
scale, plus a cost per activation element of every layer off the runtime's channel
multiple (``Runtime.channel_multiple``: 4 for ONNX Runtime's NCHWc layout).

Layers timed alone are not layers in a graph: alone, each pays its own layout reorders,
and an off-multiple layer alone pays none of the reorders its neighbours then need. So
the scale and the reorder cost are fitted on the whole model, timed at five homogeneous
pruning rates, on multiples of 8 and off them, and at six irregular ones, each against
the unpruned model side by side (non-negative least squares): the table says how latency
moves with each layer's channels, the anchors how much of that the graph keeps and what
leaving the layout costs.

The table needs no Ray and no data: ``pdsearch latency-table`` builds it (``table_build``) on the device
itself. It is keyed by what it depends on (model structure, input size, batch size,
runtime, device, threads) and refuses to serve a search that differs.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pdsearch.cost.latency import device_name
from pdsearch.cost.layer_shapes import LayerShape, structure_digest
from pdsearch.errors import PdsearchError
from pdsearch.files import atomic_path

VERSION = 1
STEP = 8  # NetAdapt's channel step: the aligned samples are multiples of it, the others one short


@dataclass
class LayerTable:
    """Milliseconds of one layer shape over sampled (in, out) channel counts, two grids by alignment."""

    shape: LayerShape
    grids: dict[str, dict[str, list]]  # "aligned" / "off": {"ins": [...], "outs": [...], "ms": [[...]]}
    block: int  # the channel multiple this layer's kernels favour on the runtime (runtimes.Runtime.multiple)

    def aligned(self, cin: float, cout: float) -> bool:
        return self.shape.aligned(cin, cout, self.block)

    def __call__(self, cin: float, cout: float) -> float:
        return self.read(cin, cout, "off" if self.reads_off(cin, cout) else "aligned")

    def reads_off(self, cin: float, cout: float) -> bool:
        return not self.aligned(cin, cout) and bool(self.grids.get("off", {}).get("ms"))

    def read(self, cin: float, cout: float, grid_name: str) -> float:
        """Milliseconds at (cin, cout), interpolated on one grid."""
        grid = self.grids[grid_name]
        ins, outs, ms = np.array(grid["ins"], float), np.array(grid["outs"], float), np.array(grid["ms"], float)
        if self.shape.depthwise:
            return float(np.interp(cout, outs, ms[0]))
        rows = np.array([np.interp(cout, outs, row) for row in ms])  # one value per sampled cin
        return float(np.interp(cin, ins, rows))


@dataclass
class LatencyTable:
    key: dict[str, Any]  # what it depends on: model, structure, input size, batch, runtime, precision, device, threads
    layers: dict[str, str]  # layer name -> its shape's key
    tables: dict[str, LayerTable]  # shape key -> table
    baseline_ms: float  # the whole unpruned model, measured
    block: int  # the runtime's channel multiple: layers off it leave the fast layout
    scale: float = 1.0  # how much of the layers' alone-timed change (on their aligned grid) the graph shows
    reorder_ms: float = 0.0  # per million activation elements of a layer off the multiple: layout changes
    seconds: float = 0.0  # how long building took
    anchors: list[dict[str, float]] = dataclasses.field(default_factory=list)  # whole-model measurements
    penalty_scale: float | None = None  # the same for what being off the multiple adds alone (None: scale's)
    off_layer_ms: float = 0.0  # what each layer off the multiple costs in the graph besides

    TERMS = ("layers_ms", "off_penalty_ms", "off_activations_m", "off_layers")

    def features(self, kept: dict[str, tuple[float, float]]) -> np.ndarray:
        """The terms the prediction weighs (``TERMS``) at the channels kept per layer name (missing layers:
        unpruned): the layers' alone-timed sum read on their aligned grids, what reading the off grid adds
        where a layer is off its multiple, those layers' activations and their number."""
        found = np.zeros(len(self.TERMS))
        for name, key in self.layers.items():
            table = self.tables[key]
            cin, cout = kept.get(name, (table.shape.in_channels, table.shape.out_channels))
            on_grid = table.read(cin, cout, "aligned")
            found[0] += on_grid
            if table.reads_off(cin, cout):
                found[1] += table.read(cin, cout, "off") - on_grid
            if not table.aligned(cin, cout):
                found[2] += table.shape.activations(cin, cout)
                found[3] += 1
        return found

    @property
    def coefficients(self) -> np.ndarray:
        penalty = self.scale if self.penalty_scale is None else self.penalty_scale
        return np.array([self.scale, penalty, self.reorder_ms, self.off_layer_ms])

    def predict(self, kept: dict[str, tuple[float, float]]) -> float:
        """Milliseconds of the whole model on the target at the channels kept per layer."""
        return self.baseline_ms + float(self.coefficients @ (self.features(kept) - self.unpruned))

    @functools.cached_property
    def unpruned(self) -> np.ndarray:
        return self.features({})

    def calibrate(self, anchors: list[tuple[dict[str, tuple[float, float]], float]]) -> None:
        """Fit the terms' weights on whole-model anchors: (channels kept per layer, ms / baseline ms).

        Alone, a layer off its multiple pays less than in a graph, where each such layer also costs
        a fixed amount (measured on MobileNetV2 in INT8: with one weight for the whole table, round_to 8
        policies were predicted 6 points slow and round_to 1 ones 12 points fast; weighing the aligned
        change, the off penalty and a cost per off layer apart, 3 and 8 points, Spearman 0.83 -> 0.90).
        """
        from scipy.optimize import nnls

        full = self.features({})
        x = np.array([self.features(kept) - full for kept, _ in anchors])
        y = np.array([(ratio - 1.0) * self.baseline_ms for _, ratio in anchors])
        if len(anchors) >= 2 and np.abs(x[:, 0]).sum() > 0:
            weights, _ = nnls(x, y)  # all non-negative: least squares through the baseline
            self.scale, self.penalty_scale, self.reorder_ms, self.off_layer_ms = map(float, weights)
            self.scale = max(self.scale, 1e-3)
        self.anchors = [{"ratio": ratio, **dict(zip(self.TERMS, map(float, full + dx)))}
                        for (_, ratio), dx in zip(anchors, x)]

    def check(self, expected: dict[str, Any], source: str = "latency table") -> None:
        """Refuse a table built for something else, naming the first thing that differs."""
        for field, value in expected.items():
            if self.key.get(field) != value:
                raise PdsearchError(f"{source} was built for {field} {self.key.get(field)!r}, this search's is "
                                    f"{value!r}: build one for it with pdsearch latency-table")

    def check_layers(self, shapes: dict[str, LayerShape], source: str = "latency table") -> None:
        """Refuse a table of another model structure, naming the first layer that differs."""
        if structure_digest(shapes) == self.key.get("structure"):
            return
        mine = {name: self.tables[key].shape for name, key in self.layers.items()}
        for name in dict.fromkeys([*shapes, *mine]):
            theirs, ours = mine.get(name), shapes.get(name)
            if theirs is None or ours is None:
                raise PdsearchError(f"{source} does not fit this model: layer {name!r} is missing from "
                                    f"{'the table' if theirs is None else 'this model'}")
            a, b = (theirs.in_channels, theirs.out_channels), (ours.in_channels, ours.out_channels)
            if a != b or theirs.kernel != ours.kernel or theirs.groups != ours.groups:
                raise PdsearchError(f"{source} does not fit this model: layer {name!r} has {a[0]}->{a[1]} channels "
                                    f"in the table, {b[0]}->{b[1]} here (build one for it with pdsearch latency-table)")
        raise PdsearchError(f"{source} does not fit this model (build one for it with pdsearch latency-table)")

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "key": self.key, "baseline_ms": self.baseline_ms, "block": self.block,
                "scale": self.scale, "penalty_scale": self.penalty_scale, "reorder_ms": self.reorder_ms,
                "off_layer_ms": self.off_layer_ms, "seconds": self.seconds, "anchors": self.anchors,
                "layers": self.layers,
                "tables": {k: {"shape": dataclasses.asdict(t.shape), "grids": t.grids, "block": t.block}
                           for k, t in self.tables.items()}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyTable":
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}, this pdsearch reads {VERSION}")
        block = int(data["block"])
        tables = {k: LayerTable(LayerShape(**{f: tuple(v) if isinstance(v, list) else v for f, v in t["shape"].items()}),
                                t["grids"], int(t.get("block", block))) for k, t in data["tables"].items()}
        key = {"precision": "fp32", **data["key"]}  # tables from before precisions were FP32
        return cls(key, data["layers"], tables, float(data["baseline_ms"]), block, float(data["scale"]),
                   float(data["reorder_ms"]), float(data.get("seconds", 0.0)), data.get("anchors", []),
                   data.get("penalty_scale"), float(data.get("off_layer_ms", 0.0)))  # older tables: one scale

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise PdsearchError(f"latency table {str(path)!r} does not exist (build one with pdsearch latency-table)") \
                from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PdsearchError(f"latency table {str(path)!r} cannot be read: {exc}") from None


def table_key(model_name: str, shapes: dict[str, LayerShape], input_size: int, batch_size: int, runtime: str,
              threads: int | None, device: torch.device, precision: str = "fp32") -> dict[str, Any]:
    return {"model": model_name, "structure": structure_digest(shapes), "input_size": input_size,
            "batch_size": batch_size, "runtime": runtime, "precision": precision, "threads": threads,
            "device": device_name(device, threads).rsplit(" (", 1)[0]}


def kept_channels(cost_model, table: LatencyTable, pruned: Sequence[float]) -> dict[str, tuple[float, float]]:
    """(in, out) channels each table layer keeps after removing ``pruned[g]`` channels of group g."""
    pruned = np.asarray(pruned, dtype=float)
    cut_out, cut_in = cost_model.remove_out @ pruned, cost_model.remove_in @ pruned
    kept = {}
    for name in table.layers:
        i = cost_model.index.get(name)
        if i is None:
            continue
        shape = table.tables[table.layers[name]].shape
        if shape.depthwise:
            c = shape.out_channels - max(cut_out[i], cut_in[i])
            kept[name] = (c, c)
        else:
            kept[name] = (shape.in_channels - cut_in[i], shape.out_channels - cut_out[i])
    return kept
