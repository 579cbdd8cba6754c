"""Export of a selected policy: rerun it, then save the model where it will be loaded.

Trials keep no weights (a sweep would store thousands of models), so the chosen policy is
rerun: the same baseline, rates, seed and fine-tuning (or a longer one), which on the same
device reproduces the trial. The model is saved, by the export path's suffix, with
``torch.export`` (``.pt2``: plain torch loads it without pdsearch,
``torch.export.load(path).module()``) or as ONNX (``.onnx``, for ONNX Runtime, TensorRT,
OpenVINO), checked at export against PyTorch on a real batch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pdsearch.catalog.objectives import given
from pdsearch.catalog.precisions import PRECISIONS, RECIPES
from pdsearch.catalog.runtimes import RUNTIMES
from pdsearch.cost.latency import ONNX_OPSET, export_onnx
from pdsearch.errors import PdsearchError
from pdsearch.files import atomic_path
from pdsearch.planning import Plan
from pdsearch.policy import Policy
from pdsearch.run.directory import Run


@dataclass(frozen=True)
class Export:
    """What ``select --export`` asks for: where, and the final fine-tune (None: as the trial did)."""

    path: Path
    finetune_epochs: int | None = None
    distill: float | None = None

    def check(self) -> None:
        """Refused before the run is read: a folder that is not there, a format nobody loads."""
        if not self.path.parent.resolve().is_dir():
            raise PdsearchError(f"cannot export to {self.path}: folder {self.path.parent} does not exist")
        if self.path.suffix not in EXPORT_FORMATS:
            raise PdsearchError(f"cannot export to {self.path}: the format follows the suffix, one of "
                                f"{', '.join(EXPORT_FORMATS)}")
        if self.path.suffix == ".onnx":
            RUNTIMES["onnxruntime"].check_installed()


def export_record(export: Path) -> Path:
    """Where an exported model's policy record is written: beside it, named after it (pruned.pt2.json)."""
    return export.with_name(export.name + ".json")


def plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def export_model(run: Run, policy: Policy, plan: Plan, row: pd.Series, export: Export,
                 record: dict[str, Any]) -> dict[str, Any]:
    """Rerun ``policy`` (prune the cached baseline, fine-tune as the trial did) and save it with torch.export."""
    from pdsearch.cost import count_cost
    from pdsearch.trial.baseline import cached_baseline
    from pdsearch.trial.training import default_device, use_threads
    from pdsearch.trial.trial import finetune_and_measure, prune_baseline, trial_context

    cfg = run.cfg
    baseline = cached_baseline(cfg, run.run_dir)
    if baseline is None:
        raise PdsearchError(f"{run.run_dir}/baseline holds no weights for this configuration: cannot rerun the policy")
    path, finetune_epochs = export.path, export.finetune_epochs
    if finetune_epochs:
        cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"epochs": finetune_epochs})})
    trial_distill = run.space.distill_weight({"distill": row["distill"]} if given(row.get("distill")) else {})
    cfg = cfg.with_distill(trial_distill if export.distill is None else export.distill)
    device = default_device()
    threads = use_threads(cfg)  # as the trial ran, so CPU reruns reproduce it
    try:
        ctx = trial_context(cfg, baseline)
        pruned = prune_baseline(ctx, np.array(plan.rates), policy, plan.criteria)
        # in FP32: a quantized policy's accuracy is measured on the file save_deployed writes, once
        measured = finetune_and_measure(ctx, pruned, cfg, policy.seed, device)
    finally:
        torch.set_num_threads(threads)
    model = pruned.to("cpu", torch.float32).to(memory_format=torch.contiguous_format).eval()
    example = ctx.planner.structure.example_input
    cost = count_cost(model, example)
    info = {
        "path": str(path),
        "format": "torch.export ExportedProgram (dynamic batch size)",
        "load": f"torch.export.load({str(path)!r}).module()",
        "input": {"shape": list(example.shape[1:]), "pixels": "in [0, 1]", "mean": list(ctx.data.mean),
                  "std": list(ctx.data.std), "normalise": "(pixels - mean) / std per channel"},
        "source": "deterministic rerun of the trial's policy (same baseline, rates, seed"
                  + (", fine-tuning" if not finetune_epochs else f"; fine-tuned {finetune_epochs} epochs instead of {run.cfg.finetune.epochs}")
                  + (f"; distilled from the baseline at weight {cfg.finetune.distill.weight:g})"
                     if cfg.finetune.distill.weight > 0 else "; no distillation)"),
        "finetune_epochs": cfg.finetune.epochs,
        "distill": cfg.finetune.distill.model_dump() if cfg.finetune.distill.weight > 0 else None,
        "device": str(device),
        "val_accuracy": measured["accuracy"],
        "test_accuracy": measured["test_accuracy"],
        "flops": cost.flops,
        "params": cost.params,
    }
    real = next(iter(ctx.data.batches("val", torch.device("cpu"))))[0][:16]
    if PRECISIONS[policy.precision].deploy is not None:
        info.update(save_deployed(model, ctx, cfg, policy.precision, path, {**record, "export": info}))
    else:
        info.update(EXPORT_FORMATS[path.suffix](model, real, path, {**record, "export": info}))
    return info


def save_deployed(model: torch.nn.Module, ctx, cfg, precision: str, path: Path, record: dict[str, Any]
                  ) -> dict[str, Any]:
    """The policy as it ships in a quantized precision (ONNX), with its accuracy measured in ONNX Runtime on the
    file's own bytes: what policy.json states is what the file computes."""
    import onnx

    from pdsearch.trial.quantized import calibration_batches, deployed_model, onnx_accuracy

    if path.suffix != ".onnx":
        raise PdsearchError(f"cannot export to {path}: a {precision} policy ships as ONNX, give a .onnx path")
    q = cfg.quantization
    proto = onnx.load_from_string(deployed_model(model, ctx.planner.structure.example_input, ctx.data, precision, q))
    calibration = calibration_batches(ctx.data, q.calibration_batches)
    fields = {"format": f"ONNX, {precision} (ONNX Runtime static quantization, opset {ONNX_OPSET}, dynamic batch size)",
              "precision": precision, "opset": ONNX_OPSET, "load": f"onnxruntime.InferenceSession({str(path)!r})",
              "quantization": {**RECIPES[q.recipe].describe(), "calibration_data": {
                  "split": "train", "batches": len(calibration), "images": sum(len(b) for b in calibration),
                  "augmentation": "none"}}}
    fields.update({f"{split}_accuracy": onnx_accuracy(proto.SerializeToString(), ctx.data, split)
                   for split in ("val", "test")})
    onnx.helper.set_model_props(proto, {"policy.json": json.dumps({**record, "export": {**record["export"], **fields}})})
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return fields


def save_pt2(model: torch.nn.Module, batch: torch.Tensor, path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """torch.export with a dynamic batch size; the record rides along as an extra file."""
    with torch.no_grad():
        program = torch.export.export(model, (batch[:2],), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp, extra_files={"policy.json": json.dumps(record)})
    return {}


ONNX_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}  # float32 kernels of two runtimes, on logits


def save_onnx(model: torch.nn.Module, batch: torch.Tensor, path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """ONNX with a dynamic batch size and the record in its metadata; ONNX Runtime must match PyTorch on ``batch``."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load_from_string(export_onnx(model, batch, ONNX_OPSET, dynamic_batch=True))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    with torch.no_grad():
        want = model(batch).numpy()
    error = float(np.abs(got - want).max())
    if not np.allclose(got, want, **ONNX_TOLERANCE):
        raise PdsearchError(f"the ONNX export differs from PyTorch by up to {error:.3g} on a validation batch "
                            f"(tolerance atol {ONNX_TOLERANCE['atol']:g}, rtol {ONNX_TOLERANCE['rtol']:g}): not written")
    fields = {"format": f"ONNX (opset {ONNX_OPSET}, dynamic batch size)", "opset": ONNX_OPSET,
              "load": f"onnxruntime.InferenceSession({str(path)!r})",
              "check": {"batch": len(batch), "max_abs_diff": error, **ONNX_TOLERANCE}}
    onnx.helper.set_model_props(proto, {"policy.json": json.dumps({**record, "export": {**record["export"], **fields}})})
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return fields


EXPORT_FORMATS = {".pt2": save_pt2, ".onnx": save_onnx}  # by the export path's suffix


