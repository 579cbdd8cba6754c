"""GPU energy per image from NVML's total-energy counter (nvidia-ml-py: ``pip install -e ".[energy]"``).

The counter (millijoules since the driver loaded) is read around the same kind of timed
runs as latency; the pruned model and the baseline are measured back to back, and the
ratio is what a search compares.
"""
from __future__ import annotations

import torch
from torch import nn

from pdsearch.errors import PdsearchError


def _handle(device: torch.device):
    try:
        import pynvml
    except ImportError:
        raise PdsearchError('energy is measured with NVML: pip install -e ".[energy]" (nvidia-ml-py)') from None
    pynvml.nvmlInit()
    uuid = str(torch.cuda.get_device_properties(device).uuid)  # Ray renumbers visible GPUs; the UUID does not change
    return pynvml, pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")


@torch.inference_mode()
def energy_per_image(model: nn.Module, batch: torch.Tensor, runs: int = 50) -> float:
    """Millijoules per image over ``runs`` forward passes of ``batch`` on its CUDA device."""
    if batch.device.type != "cuda":
        raise PdsearchError("energy is measured on a GPU: this trial has none")
    nvml, handle = _handle(batch.device)
    model.eval()
    model(batch)  # warm
    torch.cuda.synchronize(batch.device)
    start = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    for _ in range(runs):
        model(batch)
    torch.cuda.synchronize(batch.device)
    return float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - start) / (runs * len(batch))
