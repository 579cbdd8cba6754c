"""The numeric precisions a policy can ship in, and the quantization recipes that produce them (torch-free).

A precision says which runtimes run it (each with the import path of a session that
times it) and how the fine-tuned model becomes the artefact that ships, which trials
evaluate in its runtime.
``fp32`` is the fine-tuned model as it trains; ``int8`` is ONNX Runtime's static
quantization of it. TensorRT FP16/INT8 or OpenVINO INT8 are one entry each here, plus
their session functions.

A recipe is how a model is quantized: ONNX Runtime's ``quantize_static`` settings
(format, calibration method, per-channel weights, types). Another recipe is another
entry, never a branch in the code that quantizes.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Mapping

from pdsearch.catalog.runtimes import RUNTIMES
from pdsearch.errors import PdsearchError
from pdsearch.registry import unknown


@dataclass(frozen=True)
class Precision:
    name: str
    label: str
    # runtime name -> import path: (model, example batch, threads) -> a callable running one forward pass;
    # None: every runtime, with its own session (runtimes.RUNTIMES)
    sessions: Mapping[str, str] | None = None
    # import path: (fine-tuned model, example batch, calibration batches, recipe) -> the ONNX model that ships,
    # which trials evaluate in ONNX Runtime; None: the torch model itself ships
    deploy: str | None = None
    requires: str | None = None  # the module it imports
    extra: str | None = None  # the pdsearch extra that installs it

    def check_installed(self) -> None:
        if self.requires and importlib.util.find_spec(self.requires) is None:
            raise PdsearchError(f"precision {self.name!r} needs {self.requires}, which is not installed: "
                                f'pip install -e ".[{self.extra}]"')

    def check_runtime(self, runtime: str) -> None:
        if self.sessions is not None and runtime not in self.sessions:
            raise PdsearchError(f"precision {self.name!r} runs on {' or '.join(self.sessions)}, not on latency runtime "
                                f"{runtime!r}: set latency.runtime: {next(iter(self.sessions))}")


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", "FP32"),
    "int8": Precision("int8", "INT8", {"onnxruntime": "pdsearch.cost.quantize:int8_session"},
                      deploy="pdsearch.cost.quantize:quantize_int8", requires="onnxruntime", extra="onnx"),
}


def check_target(runtime: str, precision: str) -> None:
    """A runtime and a precision that are registered, installed, and run one another."""
    if runtime not in RUNTIMES:
        raise PdsearchError(unknown("latency runtime", runtime, RUNTIMES))
    if precision not in PRECISIONS:
        raise PdsearchError(unknown("precision", precision, PRECISIONS))
    RUNTIMES[runtime].check_installed()
    PRECISIONS[precision].check_installed()
    PRECISIONS[precision].check_runtime(runtime)


@dataclass(frozen=True)
class Recipe:
    """ONNX Runtime static quantization settings (``onnxruntime.quantization.quantize_static``)."""

    name: str
    description: str
    calibrate_method: str = "MinMax"  # a CalibrationMethod name: MinMax, Entropy, Percentile, Distribution
    quant_format: str = "QDQ"  # QDQ: Q/DQ pairs around float ops, which ONNX Runtime fuses to integer kernels
    per_channel: bool = True  # one weight scale per output channel
    activation_type: str = "QUInt8"  # x86 integer kernels want uint8 activations (u8s8)
    weight_type: str = "QInt8"
    extra_options: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.name, "format": self.quant_format, "calibration": self.calibrate_method,
                "per_channel": self.per_channel, "activations": self.activation_type, "weights": self.weight_type,
                **dict(self.extra_options)}


RECIPES: dict[str, Recipe] = {
    "minmax": Recipe("minmax", "QDQ, per-channel int8 weights, uint8 activations, MinMax calibration"),
    "percentile": Recipe("percentile", "as minmax, activations clipped at their 99.999th percentile",
                         calibrate_method="Percentile", extra_options={"CalibPercentile": 99.999}),
    "per_tensor": Recipe("per_tensor", "as minmax, one weight scale per tensor", per_channel=False),
}
