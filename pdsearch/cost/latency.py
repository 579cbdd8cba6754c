"""Measured inference latency on a runtime: what deployment pays, which FLOPs do not always predict.

A runtime's session (``pdsearch.catalog.runtimes``) prepares a model once and returns a callable
that runs one forward pass of a fixed batch: eager PyTorch, or the model exported to ONNX
and run by ONNX Runtime. Timing is the same for every runtime: warm-up runs, then the
median of N timed runs (and the interquartile range), CUDA synchronised around each run.
Measure the pruned model and its baseline back to back in one process and use the ratio:
absolute times differ between nodes, GPUs and moments on a shared machine, ratios taken
side by side far less.
"""
from __future__ import annotations

import contextlib
import io
import platform
import re
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from pdsearch.catalog.precisions import PRECISIONS, check_target
from pdsearch.catalog.runtimes import RUNTIMES
from pdsearch.errors import PdsearchError
from pdsearch.files import native_output_silenced
from pdsearch.registry import resolve

ONNX_OPSET = 17
Session = Callable[[], object]  # one forward pass of the batch the session was made for


@dataclass(frozen=True)
class Latency:
    median_ms: float
    iqr_ms: float


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_session(model: nn.Module, batch: torch.Tensor, threads: int | None = None) -> Session:
    """Eager PyTorch in eval and inference mode, on the batch's device (the caller sets torch's threads around the timing)."""
    model.eval()

    @torch.inference_mode()
    def run():
        out = model(batch)
        if batch.is_cuda:
            torch.cuda.synchronize(batch.device)
        return out
    return run


def export_onnx(model: nn.Module, batch: torch.Tensor, opset: int = ONNX_OPSET, dynamic_batch: bool = False) -> bytes:
    """The model as ONNX (TorchScript exporter; fixed shapes unless ``dynamic_batch``): an unsupported operator
    is one line naming it."""
    model = model.eval()
    buffer = io.BytesIO()
    try:
        # (the exporter prints its graph from C++ when it fails, and warns as it goes)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), native_output_silenced((1, 2)):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (batch,), buffer, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None)
    except Exception as exc:  # the exporter raises several types; the first line names the operator
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        operator = re.search(r"operator '?([\w:.]+)'?", text)
        what = f"operator {operator.group(1)}" if operator else text
        raise PdsearchError(f"ONNX cannot export this model ({what}): {text[:200]}") from None
    return buffer.getvalue()


def onnx_providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def ort_session(onnx_model: bytes, threads: int | None = None, device: torch.device = torch.device("cpu")):
    """An ONNX Runtime InferenceSession with all graph optimisations, quiet, on ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(onnx_model, options, providers=onnx_providers(device))


def onnxruntime_session(model: nn.Module | bytes, batch: torch.Tensor, threads: int | None = None) -> Session:
    """The model exported to ONNX (or ONNX bytes), in an ONNX Runtime session with all graph optimisations."""
    onnx_model = model if isinstance(model, bytes) else export_onnx(model, batch)
    session = ort_session(onnx_model, threads, batch.device)
    feed = {session.get_inputs()[0].name: batch.detach().cpu().numpy()}
    return lambda: session.run(None, feed)


def session(runtime: str, model: nn.Module, batch: torch.Tensor, threads: int | None = None,
            precision: str = "fp32") -> Session:
    """``model`` prepared to run ``batch`` on ``runtime`` in ``precision`` (catalog.precisions)."""
    check_target(runtime, precision)
    spec, deployed = RUNTIMES[runtime], PRECISIONS[precision]
    return resolve(spec.session if deployed.sessions is None else deployed.sessions[runtime])(model, batch, threads)


def time_session(run: Session, warmup: int = 10, runs: int = 50) -> Latency:
    """Median and IQR of ``runs`` calls after ``warmup``."""
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        run()
        if i >= warmup:
            times.append(1000.0 * (time.perf_counter() - start))
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return Latency(float(median), float(q3 - q1))


def measure_latency(model: nn.Module, batch: torch.Tensor, warmup: int = 10, runs: int = 50,
                    runtime: str = "torch", threads: int | None = None, precision: str = "fp32") -> Latency:
    """Median and IQR of ``runs`` forward passes of ``batch`` (on the model's device) after ``warmup``."""
    was_training = model.training
    try:
        with torch_threads(threads):
            return time_session(session(runtime, model, batch, threads, precision), warmup, runs)
    finally:
        model.train(was_training)


def device_name(device: torch.device, threads: int | None = None) -> str:
    """What latency was measured on: the GPU's name, or the CPU's model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{cpu} ({threads or torch.get_num_threads()} threads)"


def reduction_pct(pruned: float, baseline: float) -> float:
    """How much less the pruned model takes than its baseline, in percent (negative: it takes more)."""
    return 100.0 * (1.0 - pruned / baseline)


def compare_sessions(first: Session, second: Session, warmup: int = 10, runs: int = 50, rounds: int = 3,
                     others: Sequence[Session] = ()) -> tuple[Latency, ...]:
    """Both (and ``others``) measured in alternating rounds in this process, so drift on the machine hits all alike.

    Returns the round whose ratio first / second is the median: a ratio taken side by side
    drifts far less than either time. Every ratio between two returned times is of one round.
    """
    found = [tuple(time_session(run, warmup, runs) for run in (first, second, *others)) for _ in range(rounds)]
    return sorted(found, key=lambda times: times[0].median_ms / times[1].median_ms)[len(found) // 2]


def compare(pruned: nn.Module, baseline: nn.Module, batch: torch.Tensor, warmup: int = 10, runs: int = 50,
            rounds: int = 3, runtime: str = "torch", threads: int | None = None, precision: str = "fp32",
            reference: str | None = None) -> tuple[Latency, ...]:
    """The pruned model and its baseline in ``precision`` on ``runtime``, in alternating rounds; with a
    ``reference`` precision, both in that one too, in the same rounds: (pruned, baseline[, baseline, pruned
    in the reference])."""
    modes = pruned.training, baseline.training
    try:
        with torch_threads(threads):
            def prepared(model: nn.Module, p: str) -> Session:
                return session(runtime, model, batch, threads, p)

            others = (prepared(baseline, reference), prepared(pruned, reference)) if reference else ()
            return compare_sessions(prepared(pruned, precision), prepared(baseline, precision), warmup, runs, rounds,
                                    others)
    finally:
        pruned.train(modes[0])
        baseline.train(modes[1])
