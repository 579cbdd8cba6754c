"""Images per second of pdsearch's fine-tune loop against a plain PyTorch loop, same pruned model and device.

    python benchmarks/finetune_throughput.py [--model resnet20] [--images 10000] [--epochs 2] [--batch-size 128]

The model is resnet20 pruned at GPR 50 (PD3) at 32x32, 10 classes; the data are random
CIFAR-shaped tensors (throughput does not depend on what the pixels show). pdsearch's
loop (training.train: tensors on the device, augmentation there, no DataLoader; on CUDA
bf16 autocast and channels_last) against the plain loop doing the same work the usual way
(a DataLoader over the tensors with torchvision's per-image RandomCrop(padding=size/8) and
RandomHorizontalFlip, fp32, the same SGD and label smoothing). CUDA when present, else the
CPU with all its threads.
"""
import argparse
import copy
import time

import torch
from torch import nn

from pdsearch.config import TrainConfig
from pdsearch.data.bundle import DataBundle, TensorSplit
from pdsearch.planning import Planner
from pdsearch.policy import Policy
from pdsearch.pruning import analyze, prune
from pdsearch.trial.training import prepare, train


class Augmented(torch.utils.data.Dataset):
    """The same work as pdsearch's loop, the usual way: torchvision's random crop (padding 4) and flip per image."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        from torchvision.transforms import v2

        self.x, self.y = x, y
        self.transform = v2.Compose([v2.RandomCrop(x.shape[-1], padding=x.shape[-1] // 8), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), self.y[i]


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, device) -> None:
    loader = torch.utils.data.DataLoader(Augmented(x, y), batch_size=batch_size, shuffle=True,
                                         pin_memory=device.type == "cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(model(xb), yb, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    planner = Planner(args.model, num_classes=10, input_size=32)
    rates = planner.rates(Policy(gpr=50, pd="PD3"))
    pruned = prune(analyze(copy.deepcopy(planner.structure.model), 32), rates)
    x, y = torch.randn(args.images, 3, 32, 32), torch.randint(0, 10, (args.images,))
    data = DataBundle(name="random", num_classes=10, in_channels=3, input_size=32, train=TensorSplit(x, y),
                      val=TensorSplit(x[:256], y[:256]), test=TensorSplit(x[:256], y[:256]), batch_size=args.batch_size)
    cfg = TrainConfig(epochs=args.epochs, lr=0.01)
    ours = prepare(copy.deepcopy(pruned), device)
    theirs = copy.deepcopy(pruned).to(device)
    train(ours, data, TrainConfig(epochs=1, lr=0.01), device)  # warm-up both (allocator, cuDNN autotune)
    plain_loop(theirs, x, y, 1, args.batch_size, device)
    t_ours = timed(lambda: train(ours, data, cfg, device))
    t_plain = timed(lambda: plain_loop(theirs, x, y, args.epochs, args.batch_size, device))
    n = args.images * args.epochs
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model} pruned (GPR 50, PD3), {args.images} images x {args.epochs} epochs, batch {args.batch_size}, {name}")
    print(f"pdsearch fine-tune loop: {n / t_ours:8.0f} images/s")
    print(f"plain PyTorch loop:      {n / t_plain:8.0f} images/s")
    print(f"ratio pdsearch / plain:  {t_plain / t_ours:.2f}")


if __name__ == "__main__":
    main()
