"""A policy in the precision it ships in: the fine-tuned model quantized, and its accuracy measured as deployed.

A precision with a ``deploy`` step (``catalog.precisions``: int8) turns the fine-tuned
model into the ONNX model that ships, its ranges calibrated on training batches only,
and the trial's ``accuracy`` and ``test_accuracy`` become that model's, evaluated batch
by batch in ONNX Runtime; the FP32 figures are kept beside them. MO-ASHA's rungs stay in
FP32: quantizing at every rung would cost a calibration and two evaluations per rung for
a ranking the FP32 accuracy already gives; the last report is in the trial's precision.
"""
from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from pdsearch.catalog.precisions import PRECISIONS
from pdsearch.config import QuantizationConfig
from pdsearch.cost.quantize import onnx_logits
from pdsearch.data.bundle import DataBundle
from pdsearch.registry import resolve

CPU = torch.device("cpu")


def calibration_batches(data: DataBundle, count: int) -> list[torch.Tensor]:
    """The first ``count`` training batches as the model sees them at inference (no augmentation): calibration
    never reads validation or test data."""
    return [x for x, _ in itertools.islice(data.batches("train", CPU), count)]


def onnx_accuracy(model: bytes, data: DataBundle, split: str, threads: int | None = None) -> float:
    """Top-1 accuracy in percent of an ONNX model in ONNX Runtime, batch by batch."""
    batches = list(data.batches(split, CPU))
    logits = onnx_logits(model, (x for x, _ in batches), threads)
    correct = sum(int((np.argmax(out, 1) == y.numpy()).sum()) for out, (_, y) in zip(logits, batches))
    return 100.0 * correct / max(sum(len(y) for _, y in batches), 1)


def deployed_model(model: nn.Module, example: torch.Tensor, data: DataBundle, precision: str,
                   quantization: QuantizationConfig) -> bytes:
    """``model`` as it ships in ``precision`` (ONNX), calibrated on ``quantization.calibration_batches`` training
    batches."""
    model = model.to(CPU, torch.float32).to(memory_format=torch.contiguous_format).eval()
    deploy = resolve(PRECISIONS[precision].deploy)
    return deploy(model, example, calibration_batches(data, quantization.calibration_batches), quantization.recipe)


def measure_deployed(model: nn.Module, example: torch.Tensor, data: DataBundle, precision: str,
                     quantization: QuantizationConfig, fp32: dict[str, float], threads: int | None = None
                     ) -> dict[str, Any]:
    """The trial's accuracies in ``precision`` (``fp32``'s kept as ``*_fp32``); nothing to add for FP32."""
    if PRECISIONS[precision].deploy is None:
        return {}
    start = time.time()
    deployed = deployed_model(model, example, data, precision, quantization)
    val, test = (onnx_accuracy(deployed, data, split, threads) for split in ("val", "test"))
    return {"accuracy": val, "test_accuracy": test, "accuracy_fp32": fp32["accuracy"],
            "test_accuracy_fp32": fp32["test_accuracy"], "quantization_drop": fp32["accuracy"] - val,
            "quantization_seconds": time.time() - start}
