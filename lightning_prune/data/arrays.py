"""In-memory data sets: ``(x, y)`` arrays, label noise, and the data-module half every in-memory set shares."""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
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
