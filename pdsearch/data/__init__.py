"""Datasets: the registry ``data.dataset`` is validated against, and ``load_data``.

The registry is a table of light entries (no torch at import), so validating a config
stays fast; adding a dataset is a loader function (``DataConfig -> DataBundle``) and one
line here (from a plugin module too).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pdsearch.registry import resolve

if TYPE_CHECKING:
    from pdsearch.config import DataConfig
    from pdsearch.data.bundle import DataBundle


@dataclass(frozen=True)
class Dataset:
    loader: str  # import path of a function DataConfig -> DataBundle, imported when the data is loaded
    needs_root: bool = True  # read from data.root (False: embedded in a package)


DATASETS: dict[str, Dataset] = {
    "digits": Dataset("pdsearch.data.loaders:digits", needs_root=False),
    "cifar10": Dataset("pdsearch.data.loaders:cifar10"),
    "cifar100": Dataset("pdsearch.data.loaders:cifar100"),
    "imagefolder": Dataset("pdsearch.data.loaders:imagefolder"),
}


_CACHE: dict[str, "DataBundle"] = {}


def load_data(cfg: DataConfig) -> DataBundle:
    """Load (once per process) the dataset ``cfg`` describes."""
    key = cfg.model_dump_json()
    if key not in _CACHE:
        _CACHE[key] = resolve(DATASETS[cfg.dataset].loader)(cfg)
    return _CACHE[key]
