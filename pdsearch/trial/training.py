"""Training and evaluation: the baseline's training and every trial's fine-tune.

SGD with Nesterov momentum, a learning rate that decays to 0 over the run (cosine),
label smoothing; on CUDA, bf16 autocast and channels_last. A non-finite loss raises
Diverged within 25 steps rather than wasting the rest of the budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pdsearch.config import SearchConfig, TrainConfig
from pdsearch.data.bundle import DataBundle


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Teacher:
    """Logits distillation (Hinton et al.) from the unpruned baseline: the pruned model also learns its soft targets.

    The teacher runs in eval mode without gradients, one more forward pass per batch; the
    loss is (1 - weight) · the labels' loss + weight · T² · KL(teacher ‖ student) at temperature T.
    """

    model: nn.Module
    weight: float
    temperature: float

    def loss(self, x: torch.Tensor, logits: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = self.model(x)
        t = self.temperature
        kd = F.kl_div(F.log_softmax(logits.float() / t, dim=1), F.log_softmax(soft.float() / t, dim=1),
                      reduction="batchmean", log_target=True) * t * t
        return (1 - self.weight) * hard + self.weight * kd


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def default_device() -> torch.device:
    """The GPU Ray assigned (Ray hides the others), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_threads(cfg: SearchConfig) -> int:
    """Torch threads = the CPUs a trial is given (``resources.cpu``); returns the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.resources.cpu)))
    return previous


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def train(model: nn.Module, data: DataBundle, cfg: TrainConfig, device: torch.device, seed: int = 0,
          after_epoch: Callable[[int], None] | None = None, teacher: Teacher | None = None) -> None:
    """Train ``model`` in place for ``cfg.epochs`` epochs of ``data.train``; ``after_epoch(e)`` after epoch e (1-based).

    With a ``teacher``, the loss adds its distillation term (none: exactly the plain loss).

    The learning-rate schedule spans all ``cfg.epochs``, so stopping early at epoch e
    leaves exactly the model a full run has at epoch e.
    """
    if cfg.epochs == 0:
        return
    model.train()
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN and biases
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
    )
    steps_per_epoch = math.ceil(len(data.train) / data.batch_size)
    total = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    diverged = torch.zeros((), dtype=torch.bool, device=device)  # checked every few steps: no sync per step
    for epoch in range(cfg.epochs):
        for step, (x, y) in enumerate(data.batches("train", device, train=True, seed=seed * 1000 + epoch)):
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                logits = model(x)
                loss = loss_fn(logits, y)
                if teacher is not None:
                    loss = teacher.loss(x, logits, loss)
            diverged |= ~torch.isfinite(loss)
            if step % 25 == 24 and diverged:
                raise Diverged(f"loss became non-finite in epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        if diverged:
            raise Diverged(f"loss became non-finite in epoch {epoch + 1}")
        if after_epoch is not None:
            after_epoch(epoch + 1)
            model.train()


@torch.no_grad()
def evaluate(model: nn.Module, data: DataBundle, split: str, device: torch.device) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = total = 0
    for x, y in data.batches(split, device):
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = model(x)
        correct += (logits.argmax(1) == y).sum().item()
        total += len(y)
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Re-estimate BatchNorm running statistics on ``batches`` (no gradients), as adaptive BN does.

    Pruning changes what every later layer sees; statistics re-estimated on a few dozen
    batches make a pruned model's accuracy a far better guide to its fine-tuned accuracy.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or not batches:
        return
    model.train()
    reestimate_batchnorm(norms, model, [x for x, _ in batches])
    model.eval()


@torch.no_grad()
def reestimate_batchnorm(norms: list[nn.Module], forward: Callable, inputs: list) -> None:
    """``norms``' statistics as the cumulative average over ``forward`` of ``inputs`` (the caller sets train mode)."""
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    for x in inputs:
        forward(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
