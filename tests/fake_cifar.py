"""Small CIFAR-10/100 data sets written in the real on-disk format (torchvision's python pickles).

torchvision checks every file against the official md5 sums; ``point_torchvision_at`` makes the
dataset classes expect the sums of the files written here (the loading code stays torchvision's).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torchvision


def write_batch(path: Path, data: np.ndarray, labels: list[int], label_key: str, extra: dict | None = None) -> None:
    entry = {"batch_label": b"testing batch", label_key: labels, "data": data, "filenames": [b"x.png"] * len(labels)}
    entry.update(extra or {})
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def images(rng: np.random.Generator, n: int) -> np.ndarray:
    # CIFAR's python batches store each image as 3072 uint8: 1024 red, then green, then blue, row-major.
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, monkeypatch, per_batch: int = 4, num_test: int = 8, seed: int = 0):
    """Five training batches of ``per_batch`` images and a test batch under ``root/cifar-10-batches-py``.

    Returns ``(train_data, train_labels, test_data)``.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    train_data, train_labels = [], []
    for b in range(1, 6):
        data, labels = images(rng, per_batch), [(per_batch * (b - 1) + i) % 10 for i in range(per_batch)]
        write_batch(folder / f"data_batch_{b}", data, labels, "labels")
        train_data.append(data)
        train_labels += labels
    test_data = images(rng, num_test)
    write_batch(folder / "test_batch", test_data, [i % 10 for i in range(num_test)], "labels")
    with open(folder / "batches.meta", "wb") as handle:
        meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072}
        pickle.dump(meta, handle, protocol=2)
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[name, md5(folder / name)] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(
        cls, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5(folder / "batches.meta")}
    )
    return np.concatenate(train_data), np.array(train_labels), test_data


def write_cifar100(root: Path, monkeypatch, num_train: int = 12, num_test: int = 5, seed: int = 1) -> list[int]:
    """A training and a test file under ``root/cifar-100-python``; returns the training fine labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    fine = [(7 * i) % 100 for i in range(num_train)]
    write_batch(
        folder / "train", images(rng, num_train), fine, "fine_labels", {"coarse_labels": [i % 20 for i in fine]}
    )
    test_fine = [(i + 1) % 100 for i in range(num_test)]
    write_batch(folder / "test", images(rng, num_test), test_fine, "fine_labels", {"coarse_labels": [0] * num_test})
    with open(folder / "meta", "wb") as handle:
        names = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
        pickle.dump(names, handle, protocol=2)
    cls = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(cls, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(cls, "meta", {"filename": "meta", "key": "fine_label_names", "md5": md5(folder / "meta")})
    return fine
