"""Datasets with a validation split kept apart from the test split.

Selection (the search objective) reads validation accuracy; test accuracy is reported,
never optimised. Small datasets are held as tensors on the trial's device and augmented
there (random crop + flip), batched without a DataLoader; large ImageFolder sets stream
through a DataLoader with workers.
"""
from __future__ import annotations

import dataclasses
import functools
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from pdsearch.config import DataConfig
from pdsearch.errors import PdsearchError

Batch = tuple[torch.Tensor, torch.Tensor]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class TensorSplit:
    x: torch.Tensor  # float32, normalised, N×C×H×W
    y: torch.Tensor  # int64
    _on_device: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.y)

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self.x.to(device), self.y.to(device))
        return self._on_device[key]


@dataclass
class DataBundle:
    name: str
    num_classes: int
    in_channels: int
    input_size: int
    train: TensorSplit | torch.utils.data.Dataset
    val: TensorSplit | torch.utils.data.Dataset
    test: TensorSplit | torch.utils.data.Dataset
    batch_size: int = 128
    crop: bool = True
    flip: bool = True
    workers: int = 2
    mean: tuple[float, ...] = IMAGENET_MEAN  # inputs are (pixels in [0, 1] - mean) / std, per channel
    std: tuple[float, ...] = IMAGENET_STD

    def batches(self, split: str, device: torch.device, train: bool = False, seed: int = 0) -> Iterator[Batch]:
        data = getattr(self, split)
        if isinstance(data, TensorSplit):
            return self._tensor_batches(data, device, train, seed)
        loader = torch.utils.data.DataLoader(
            data, batch_size=self.batch_size, shuffle=train, num_workers=self.workers,
            generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        return ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader)

    def _tensor_batches(self, split: TensorSplit, device: torch.device, train: bool, seed: int) -> Iterator[Batch]:
        x, y = split.on(device)
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(y), generator=gen) if train else torch.arange(len(y))
        pad = max(1, self.input_size // 8)
        for start in range(0, len(y), self.batch_size):
            idx = order[start : start + self.batch_size].to(device)
            xb, yb = x[idx], y[idx]
            if train and self.crop:
                xb = _random_crop(xb, pad, gen)
            if train and self.flip:
                flip = (torch.rand(len(xb), generator=gen) < 0.5).to(device)
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            yield xb, yb

    def with_channels(self, channels: int) -> "DataBundle":
        """Grayscale data fed to an RGB model: repeat the channel."""
        if channels == self.in_channels:
            return self
        if self.in_channels != 1 or not all(isinstance(s, TensorSplit) for s in (self.train, self.val, self.test)):
            raise PdsearchError(f"model needs {channels} input channels, dataset {self.name} has {self.in_channels}")
        rep = [TensorSplit(s.x.repeat(1, channels, 1, 1), s.y) for s in (self.train, self.val, self.test)]
        return dataclasses.replace(self, in_channels=channels, train=rep[0], val=rep[1], test=rep[2],
                                   mean=self.mean * channels, std=self.std * channels)


def _random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch, as one gather on the batch's device."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return padded[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def _stratified(y: np.ndarray, fraction: float, seed: int, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep, held = train_test_split(pool, test_size=fraction, random_state=seed, stratify=y[pool])
    return np.sort(keep), np.sort(held)


def _normalise(train: torch.Tensor, *others: torch.Tensor) -> tuple[list[torch.Tensor], tuple, tuple]:
    """Standardise with the train split's per-channel statistics (returned for exported models' users)."""
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    stats = tuple(round(float(v), 6) for v in mean.flatten()), tuple(round(float(v), 6) for v in std.flatten())
    return [(t - mean) / std for t in (train, *others)], *stats


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _bundle(cfg: DataConfig, name: str, x: torch.Tensor, y: np.ndarray, test: tuple | None, flip_default: bool) -> DataBundle:
    """Split tensors (val always from train; test from ``test`` if given), normalise, bundle."""
    y_all = np.asarray(y)
    pool = np.arange(len(y_all))
    if test is None:
        pool, test_idx = _stratified(y_all, cfg.test_fraction, cfg.seed, pool)
        x_test, y_test = x[test_idx], y_all[test_idx]
    else:
        x_test, y_test = test
    train_idx, val_idx = _stratified(y_all, cfg.val_fraction, cfg.seed + 1, pool)
    x = _resize(x, cfg.input_size)
    (x_train, x_val, x_test), mean, std = _normalise(x[train_idx], x[val_idx], _resize(x_test, cfg.input_size))
    as_long = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    return DataBundle(
        name=name, num_classes=int(y_all.max()) + 1, in_channels=x.shape[1], input_size=cfg.input_size,
        train=TensorSplit(x_train, as_long(y_all[train_idx])), val=TensorSplit(x_val, as_long(y_all[val_idx])),
        test=TensorSplit(x_test, as_long(y_test)), batch_size=cfg.batch_size, crop=cfg.augment_crop,
        flip=flip_default if cfg.augment_flip is None else cfg.augment_flip, workers=cfg.workers, mean=mean, std=std,
    )


def _digits(cfg: DataConfig) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    return _bundle(cfg, "digits", x, digits.target, None, flip_default=False)  # a flipped 2 is no 2


def _cifar(torchvision_class: str, cfg: DataConfig) -> DataBundle:
    import torchvision

    cls = getattr(torchvision.datasets, torchvision_class)
    root = Path(cfg.root)

    class _Local(cls):  # the real on-disk format; checksums are checked when downloading
        def _check_integrity(self) -> bool:
            return all((root / self.base_folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(root / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]

    try:
        train = _Local(str(root), train=True, download=cfg.download)
        test = _Local(str(root), train=False)
    except RuntimeError:
        raise PdsearchError(
            f"{cfg.dataset} not found under {root} (expected {cls.base_folder}/); "
            "set data.download: true on a machine with internet access"
        ) from None
    to_tensor = lambda a: torch.tensor(a, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0  # noqa: E731
    return _bundle(cfg, cfg.dataset, to_tensor(train.data), np.array(train.targets),
                   (to_tensor(test.data), np.array(test.targets)), flip_default=True)


def _imagefolder(cfg: DataConfig) -> DataBundle:
    from torchvision import datasets, transforms

    root = Path(cfg.root)
    if not root.is_dir():
        raise PdsearchError(f"image folder not found: {root}")
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    try:
        probe = datasets.ImageFolder(str(train_dir))
    except (FileNotFoundError, RuntimeError) as exc:
        raise PdsearchError(f"image folder {train_dir}: {exc}") from None
    size = cfg.input_size
    n_images = len(probe) + (len(datasets.ImageFolder(str(test_dir))) if test_dir else 0)
    if n_images * 3 * size * size * 4 <= cfg.in_memory_limit_mb * 2**20:
        tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
        load = lambda d: datasets.ImageFolder(str(d), transform=tf)  # noqa: E731
        stack = lambda ds: (torch.stack([img for img, _ in ds]), np.array(ds.targets))  # noqa: E731
        x, y = stack(load(train_dir))
        return _bundle(cfg, "imagefolder", x, y, stack(load(test_dir)) if test_dir else None, flip_default=True)
    # Streaming: too large for memory. Validation is a seeded stratified split of train.
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    eval_tf = transforms.Compose([transforms.Resize(int(size * 1.143)), transforms.CenterCrop(size), transforms.ToTensor(), norm])
    y = np.array(probe.targets)
    pool = np.arange(len(y))
    if test_dir is None:
        pool, test_idx = _stratified(y, cfg.test_fraction, cfg.seed, pool)
        test = torch.utils.data.Subset(datasets.ImageFolder(str(train_dir), transform=eval_tf), test_idx)
    else:
        test = datasets.ImageFolder(str(test_dir), transform=eval_tf)
    train_idx, val_idx = _stratified(y, cfg.val_fraction, cfg.seed + 1, pool)
    return DataBundle(
        name="imagefolder", num_classes=len(probe.classes), in_channels=3, input_size=size,
        train=torch.utils.data.Subset(datasets.ImageFolder(str(train_dir), transform=train_tf), train_idx),
        val=torch.utils.data.Subset(datasets.ImageFolder(str(train_dir), transform=eval_tf), val_idx),
        test=test, batch_size=cfg.batch_size, workers=cfg.workers,
    )


@dataclass(frozen=True)
class Dataset:
    load: Callable[[DataConfig], DataBundle]
    needs_root: bool = True  # read from data.root (False: embedded in a package)


# The registry ``data.dataset`` is validated against: adding a dataset is a loader and a line here.
DATASETS: dict[str, Dataset] = {
    "digits": Dataset(_digits, needs_root=False),
    "cifar10": Dataset(functools.partial(_cifar, "CIFAR10")),
    "cifar100": Dataset(functools.partial(_cifar, "CIFAR100")),
    "imagefolder": Dataset(_imagefolder),
}
_CACHE: dict[str, DataBundle] = {}


def load_data(cfg: DataConfig) -> DataBundle:
    """Load (once per process) the dataset ``cfg`` describes."""
    key = cfg.model_dump_json()
    if key not in _CACHE:
        _CACHE[key] = DATASETS[cfg.dataset].load(cfg)
    return _CACHE[key]
