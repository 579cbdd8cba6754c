"""The runtimes latency is measured on, each declared once (torch-free, so config validation reads it).

A runtime prepares a model for timing and names what it needs installed; the
implementation lives in ``pdsearch.cost.latency``. Adding one (TensorRT, OpenVINO) is a
session function there plus one line here.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Mapping

from pdsearch.errors import PdsearchError


@dataclass(frozen=True)
class Runtime:
    name: str
    session: str  # import path: (model, example batch, threads) -> a callable running one forward pass
    requires: str | None = None  # the module it imports
    extra: str | None = None  # the pdsearch extra that installs it
    # CPU kernels take a channel count that is a multiple of this in their fast layout (ONNX Runtime's NCHWc
    # transform, checked on its optimised graph: 60 channels are reordered to NCHWc, 61-63 stay NCHW)
    channel_multiple: int = 8
    # the same for a quantized precision's kernels, where they favour another multiple
    channel_multiples: Mapping[str, int] = field(default_factory=dict)
    # and for its depthwise kernels, where they favour another again
    depthwise_multiples: Mapping[str, int] = field(default_factory=dict)

    def multiple(self, precision: str = "fp32", depthwise: bool = False) -> int:
        """The channel multiple this runtime's kernels (its depthwise ones) favour in ``precision``."""
        general = self.channel_multiples.get(precision, self.channel_multiple)
        return self.depthwise_multiples.get(precision, general) if depthwise else general

    def check_installed(self) -> None:
        if self.requires and importlib.util.find_spec(self.requires) is None:
            raise PdsearchError(f"latency runtime {self.name!r} needs {self.requires}, which is not installed: "
                                f'pip install -e ".[{self.extra}]"')


RUNTIMES: dict[str, Runtime] = {
    "torch": Runtime("torch", "pdsearch.cost.latency:torch_session"),  # eager PyTorch, what trials train in
    # INT8 (QDQ, u8s8 on AVX-512 VNNI): per channel², 48/56/64/72 channels were the fastest counts of 48-72,
    # 52/60/68 next, the rest 1.5-2x slower; its depthwise 3x3 conv is fast on multiples of 16 only (80-144
    # channels, each timed against 144 in alternating rounds: 0.67-0.92 of its time there, 1.2-3.7 on the other
    # multiples of 8, 1.0-1.7 off them) (benchmarks/quantization.py --part multiples sweeps both)
    "onnxruntime": Runtime("onnxruntime", "pdsearch.cost.latency:onnxruntime_session", requires="onnxruntime",
                           extra="onnx", channel_multiple=4, channel_multiples={"int8": 8},
                           depthwise_multiples={"int8": 16}),
}
