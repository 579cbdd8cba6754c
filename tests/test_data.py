"""Datasets: seeded stratified splits, validation apart from test, real on-disk formats."""
import pickle

import numpy as np
import pytest
import torch

from pdsearch.config import DataConfig
from pdsearch.data import load_data
from pdsearch.errors import PdsearchError

CPU = torch.device("cpu")


def as_set(split):
    return {tuple(row) for row in split.x.flatten(1).numpy().round(4)}


def test_digits_split_is_stratified_disjoint_and_seeded():
    d = load_data(DataConfig(input_size=12, seed=3))
    assert (len(d.train), len(d.val), len(d.test)) == (1297, 230, 270)
    assert d.num_classes == 10 and d.in_channels == 1 and d.train.x.shape[1:] == (1, 12, 12)
    assert not as_set(d.val) & as_set(d.test) and not as_set(d.train) & as_set(d.test)
    assert np.bincount(d.val.y.numpy()).min() >= 20  # every class in validation
    again = load_data(DataConfig(input_size=12, seed=3, batch_size=64))  # another cache key, same split
    assert torch.equal(again.val.y, d.val.y)
    other = load_data(DataConfig(input_size=12, seed=4))
    assert not torch.equal(other.val.y, d.val.y)
    assert abs(float(d.train.x.mean())) < 1e-4  # normalised on train statistics


def test_tensor_batches_augment_on_device():
    d = load_data(DataConfig(input_size=16, batch_size=100, augment_flip=True))
    plain = torch.cat([x for x, _ in d.batches("val", CPU)])
    assert torch.equal(plain, d.val.x)  # evaluation: no augmentation, fixed order
    x1, y1 = next(d.batches("train", CPU, train=True, seed=1))
    x2, y2 = next(d.batches("train", CPU, train=True, seed=1))
    x3, _ = next(d.batches("train", CPU, train=True, seed=2))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (100, 1, 16, 16)
    assert not any(torch.equal(x1[0], row) for row in d.train.x)  # crops/flips changed the images


def write_fake_cifar(root, n_train=200, n_test=50, classes=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        return {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, classes, n))}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(n_train // 5), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(classes)]}, f)


def test_cifar10_from_disk(tmp_path):
    write_fake_cifar(tmp_path)
    d = load_data(DataConfig(dataset="cifar10", root=str(tmp_path), input_size=32, val_fraction=0.2))
    assert (len(d.train), len(d.val), len(d.test)) == (160, 40, 50)  # test = the official test batch
    assert d.in_channels == 3 and d.num_classes == 10 and d.flip


def test_cifar_missing_is_a_clear_error(tmp_path):
    with pytest.raises(PdsearchError, match="cifar100 not found under .*data.download: true"):
        load_data(DataConfig(dataset="cifar100", root=str(tmp_path)))


def write_image_folder(root, classes=("cat", "dog", "eel"), per_class=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_split_in_memory(tmp_path):
    write_image_folder(tmp_path)
    d = load_data(DataConfig(dataset="imagefolder", root=str(tmp_path), input_size=16, val_fraction=0.25, test_fraction=0.25))
    assert d.num_classes == 3 and len(d.train) + len(d.val) + len(d.test) == 36
    assert len(d.test) == 9 and d.train.x.shape[1:] == (3, 16, 16)


def test_imagefolder_train_val_streaming(tmp_path):
    write_image_folder(tmp_path / "train")
    write_image_folder(tmp_path / "val", per_class=4)
    d = load_data(DataConfig(dataset="imagefolder", root=str(tmp_path), input_size=16, in_memory_limit_mb=0, workers=0))
    assert len(d.test) == 12  # val/ is the test set; validation comes out of train/
    assert len(d.train) + len(d.val) == 36
    x, y = next(d.batches("train", CPU, train=True))
    assert x.shape[1:] == (3, 16, 16) and y.dtype == torch.long


def test_imagefolder_missing(tmp_path):
    with pytest.raises(PdsearchError, match="image folder not found"):
        load_data(DataConfig(dataset="imagefolder", root=str(tmp_path / "nope")))
