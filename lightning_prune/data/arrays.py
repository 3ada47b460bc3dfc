"""In-memory data sets: ``(x, y)`` arrays, label noise, and the data-module half every in-memory set shares."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_prune.data.indexed import IndexedDataset


class ArrayDataset(Dataset):
    """In-memory ``(x, y)`` pairs with a ``targets`` array (so labels are read without iterating)."""

    def __init__(self, inputs: Tensor, targets: np.ndarray) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets.")
        self.inputs = inputs
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.inputs[index], int(self.targets[index])


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """``labels`` with ``round(fraction * N)`` of them, chosen at random, replaced by another class."""
    rng = np.random.default_rng(seed)
    flipped = np.array(labels, dtype=np.int64, copy=True)
    chosen = rng.choice(labels.size, int(round(fraction * labels.size)), replace=False)
    flipped[chosen] = (labels[chosen] + rng.integers(1, num_classes, chosen.size)) % num_classes
    return flipped


def split_three_ways(
    labels: np.ndarray, val_fraction: float, test_fraction: float, split_seed: int
) -> dict[str, np.ndarray]:
    """Stratified, disjoint ``train`` / ``val`` / ``test`` positions into ``labels``, each sorted.

    ``test_fraction`` (> 0) and ``val_fraction`` (>= 0; 0 = no validation split) are fractions of all
    samples, rounded to whole samples. Every split that exists must hold each class at least once (a
    stratified split needs it), which is checked here, before scikit-learn, with a message that names
    the fractions to change. Sorted, so index ``i`` of a split always means the same sample for a
    given ``split_seed``.
    """
    fractions = f"val_fraction={val_fraction!r} and test_fraction={test_fraction!r}"
    numbers = (val_fraction, test_fraction)
    if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) for f in numbers):
        raise ValueError(f"{fractions} must be finite numbers (fractions of all samples).")
    if val_fraction < 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"{fractions} must be >= 0 and > 0 with a sum below 1, leaving samples to train on "
            "(val_fraction=0 means no validation split)."
        )
    num_classes = int(np.unique(labels).size)
    num_test = int(round(test_fraction * labels.size))
    num_val = int(round(val_fraction * labels.size))
    sizes = {"test": num_test, "train": labels.size - num_test - num_val}
    if val_fraction > 0:
        sizes["val"] = num_val
    small = {name: size for name, size in sizes.items() if size < num_classes}
    if small:
        listed = ", ".join(f"{name} {size}" for name, size in small.items())
        raise ValueError(
            f"{fractions} of {labels.size} samples leave splits too small ({listed} samples) to hold at least one "
            f"sample of each class of {num_classes}; choose fractions that give every split >= {num_classes} samples."
        )
    everything = np.arange(labels.size)
    rest, test_idx = train_test_split(everything, test_size=num_test, stratify=labels, random_state=split_seed)
    if num_val > 0:
        train_idx, val_idx = train_test_split(rest, test_size=num_val, stratify=labels[rest], random_state=split_seed)
    else:
        train_idx, val_idx = rest, rest[:0]
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}


class InMemoryDataModule(pl.LightningDataModule):
    """Loaders over in-memory ``train_dataset`` (indexed), ``val_dataset`` and ``test_dataset``, which
    subclasses build in their constructor; the validation loop exists only with a validation split."""

    train_dataset: IndexedDataset
    val_dataset: ArrayDataset
    test_dataset: ArrayDataset
    # Bound per instance (to _val_dataloader) only when there is a validation split: Lightning runs a
    # validation loop only when val_dataloader is overridden.
    val_dataloader: Callable[[], DataLoader]

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"Need batch_size >= 1 and num_workers >= 0; got {batch_size} and {num_workers}.")
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _enable_validation(self) -> None:
        if len(self.val_dataset) > 0:
            self.val_dataloader = self._val_dataloader

    @property
    def targets(self) -> np.ndarray:
        """Training labels in index order."""
        return self.train_dataset.targets

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def _val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False)
