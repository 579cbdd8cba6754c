"""The dataset loaders the registry (pdsearch.data.DATASETS) names, with a validation split kept apart from the test split.

Selection (the search objective) reads validation accuracy; test accuracy is reported,
never optimised.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from pdsearch.data.bundle import IMAGENET_MEAN, IMAGENET_STD, DataBundle, TensorSplit
from pdsearch.errors import PdsearchError

if TYPE_CHECKING:
    from pdsearch.config import DataConfig


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


def digits(cfg: DataConfig) -> DataBundle:
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


def imagefolder(cfg: DataConfig) -> DataBundle:
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


def cifar10(cfg: DataConfig) -> DataBundle:
    return _cifar("CIFAR10", cfg)


def cifar100(cfg: DataConfig) -> DataBundle:
    return _cifar("CIFAR100", cfg)
