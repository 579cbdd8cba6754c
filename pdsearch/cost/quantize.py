"""INT8 by ONNX Runtime's static quantization: the artefact that CPU and edge deployments ship.

The fine-tuned model is exported to FP32 ONNX (BatchNorm folded by the exporter in eval
mode), pre-processed by ONNX Runtime (shape inference and graph optimisation belong
there, not inside quantization), then quantized with ``quantize_static`` as the recipe
says (``catalog.precisions.RECIPES``), its activation ranges calibrated on the batches
given. Trials calibrate on training batches only; timing alone (the latency table, the
trial's side-by-side latency) calibrates on the example batch, since the integer
kernels' speed does not depend on the ranges.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from pdsearch.catalog.precisions import RECIPES, Recipe
from pdsearch.cost.latency import ONNX_OPSET, Session, export_onnx, onnxruntime_session, ort_session
from pdsearch.errors import PdsearchError
from pdsearch.files import native_output_silenced


class _Batches:
    """ONNX Runtime's CalibrationDataReader over a fixed list of input arrays."""

    def __init__(self, name: str, batches: Iterable[np.ndarray]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter([{name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_int8(model: nn.Module | bytes, example: torch.Tensor, calibration: Iterable[torch.Tensor],
                  recipe: Recipe | str = "minmax") -> bytes:
    """The model (or its FP32 ONNX bytes) as a statically quantized ONNX model with a dynamic batch size.

    ``calibration``: input batches whose activation ranges fix the scales. A graph ONNX
    Runtime cannot quantize is one line naming the operator.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    recipe = RECIPES[recipe] if isinstance(recipe, str) else recipe
    fp32 = model if isinstance(model, bytes) else export_onnx(model, example, ONNX_OPSET, dynamic_batch=True)
    arrays = [b.detach().cpu().float().numpy() for b in calibration]
    if not arrays:
        raise PdsearchError("quantization needs at least one calibration batch")
    with tempfile.TemporaryDirectory(prefix="pdsearch-int8-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32)
        try:
            with native_output_silenced((1, 2)):
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                quantize_static(
                    str(pre), str(out), _Batches("input", arrays), quant_format=QuantFormat[recipe.quant_format],
                    per_channel=recipe.per_channel, activation_type=QuantType[recipe.activation_type],
                    weight_type=QuantType[recipe.weight_type],
                    calibrate_method=CalibrationMethod[recipe.calibrate_method],
                    extra_options=dict(recipe.extra_options))
        except Exception as exc:  # ONNX Runtime raises many types; the message names the node or operator
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PdsearchError(f"ONNX Runtime cannot quantize this model{_operator(text)}: {text[:200]}") from None
        return out.read_bytes()


def _operator(message: str) -> str:
    """' (operator Conv, node /c2/Conv)' as far as ONNX Runtime's message names them."""
    found = re.search(r"for (\w+)\(\d+\) node with name '([^']*)'", message)  # a kernel it does not have
    if found:
        return f" (operator {found.group(1)}, node {found.group(2)})"
    found = re.search(r"op_type[=:]\s*'?(\w+)", message) or re.search(r"\boperator '?(\w+)", message)
    return f" (operator {found.group(1)})" if found else ""


def int8_session(model: nn.Module | bytes, batch: torch.Tensor, threads: int | None = None) -> Session:
    """The model quantized to INT8 (calibrated on ``batch``: timing does not depend on the ranges), or already
    quantized ONNX bytes, in an ONNX Runtime session."""
    quantized = model if isinstance(model, bytes) else quantize_int8(model, batch, [batch])
    return onnxruntime_session(quantized, batch, threads)


def onnx_logits(model: bytes, batches: Iterable[torch.Tensor], threads: int | None = None) -> Iterator[np.ndarray]:
    """The ONNX model's outputs on each batch, on ONNX Runtime's CPU provider."""
    session = ort_session(model, threads)
    name = session.get_inputs()[0].name
    for batch in batches:
        yield session.run(None, {name: batch.detach().cpu().float().numpy()})[0]
