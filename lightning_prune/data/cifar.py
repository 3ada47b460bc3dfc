"""CIFAR-10 and CIFAR-100 data modules with the pruning papers' augmentation."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import lightning.pytorch as pl
import numpy as np
import torch
import torchvision
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from lightning_prune.data.indexed import IndexedDataset

_D = TypeVar("_D", bound=Dataset)


class TransformedSubset(Dataset):
    """Items ``(transform(x), y)`` of ``dataset`` restricted to ``indices`` (all when ``None``)."""

    def __init__(self, dataset: Any, indices: np.ndarray | None, transform: Callable[[Any], Any] | None) -> None:
        self.dataset = dataset
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self.transform = transform
        all_targets = np.asarray(dataset.targets, dtype=np.int64)
        self.targets = all_targets if self.indices is None else all_targets[self.indices]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x, y = self.dataset[int(index) if self.indices is None else int(self.indices[index])]
        return (self.transform(x) if self.transform is not None else x), int(y)


class CIFAR10DataModule(pl.LightningDataModule):
    """CIFAR-10 from ``torchvision.datasets.CIFAR10`` in a local folder.

    Training augmentation as in the TDDS/CCS/AdaPruner code: ``RandomCrop(32, padding=4)``,
    ``RandomHorizontalFlip``, ``Normalize`` with the data set's channel mean/std; evaluation
    transforms only normalise. Training items are ``(x, y, index)`` (:class:`IndexedDataset`),
    evaluation items ``(x, y)``.

    Splits: by default the whole official training set (50,000 images) is the training set, as in
    the papers, and there is no validation loop; the test loader serves the official test set. With
    ``val_size > 0`` a stratified validation split of that many images is held out of the training
    set (fixed by ``split_seed``, evaluated without augmentation) so model selection never sees
    the test set; training indices then refer to the remaining images, in their original order.

    Args:
        root: folder that holds (or will hold) ``cifar-10-batches-py``.
        download: fetch the archive into ``root`` when missing (needs internet). When ``False`` and
            the files are missing, ``setup`` fails with a message naming the folder.
        batch_size: batch size of every loader.
        num_workers: ``DataLoader`` worker processes.
        val_size: number of training images held out for validation (0: no validation split).
        split_seed: seed of the validation split.
        augment: apply the training augmentation (``False``: normalise only, e.g. for scoring
            passes without augmentation).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    dataset_class: ClassVar[type[torchvision.datasets.CIFAR10]] = torchvision.datasets.CIFAR10
    num_classes: ClassVar[int] = 10
    mean: ClassVar[tuple[float, float, float]] = (0.4914, 0.4822, 0.4465)
    std: ClassVar[tuple[float, float, float]] = (0.2470, 0.2435, 0.2616)
    input_shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)
    # Bound per instance (to _val_dataloader) only when val_size > 0: Lightning runs a validation loop
    # only when val_dataloader is overridden.
    val_dataloader: Callable[[], DataLoader]

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 4,
        val_size: int = 0,
        split_seed: int = 0,
        augment: bool = True,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0 or val_size < 0:
            raise ValueError(
                f"Need batch_size >= 1, num_workers >= 0 and val_size >= 0; got {batch_size}, {num_workers}, {val_size}."
            )
        self.save_hyperparameters()
        self.root = os.fspath(root)
        self.download = download
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.split_seed = split_seed
        self.augment = augment
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_dataset: IndexedDataset | None = None
        self.val_dataset: TransformedSubset | None = None
        self.test_dataset: TransformedSubset | None = None
        if val_size > 0:
            # Lightning runs a validation loop only when val_dataloader is overridden.
            self.val_dataloader = self._val_dataloader

    @property
    def eval_transform(self) -> Callable[[Any], Any]:
        return T.Compose([T.ToTensor(), T.Normalize(self.mean, self.std)])

    @property
    def train_transform(self) -> Callable[[Any], Any]:
        if not self.augment:
            return self.eval_transform
        return T.Compose(
            [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(self.mean, self.std)]
        )

    def _open(self, train: bool) -> Any:
        try:
            return self.dataset_class(self.root, train=train, download=False)
        except RuntimeError as error:
            folder = os.path.join(self.root, self.dataset_class.base_folder)
            raise FileNotFoundError(
                f"{self.dataset_class.__name__} files are missing or corrupted in {folder!r} (torchvision: {error}). "
                f"Set download=True on {type(self).__name__} to fetch them (needs internet), or set root to the "
                f"folder that contains {self.dataset_class.base_folder!r}."
            ) from error

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                self.dataset_class(self.root, train=train, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        full_train = self._open(train=True)
        targets = np.asarray(full_train.targets, dtype=np.int64)
        if self.val_size > 0:
            if self.val_size >= targets.size:
                raise ValueError(f"val_size={self.val_size} leaves no training images out of {targets.size}.")
            train_idx, val_idx = train_test_split(
                np.arange(targets.size), test_size=self.val_size, stratify=targets, random_state=self.split_seed
            )
            train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
            self.val_dataset = TransformedSubset(full_train, val_idx, self.eval_transform)
            train_part = TransformedSubset(full_train, train_idx, None)
        else:
            train_part = TransformedSubset(full_train, None, None)
        self.train_dataset = IndexedDataset(train_part, transform=self.train_transform)
        self.test_dataset = TransformedSubset(self._open(train=False), None, self.eval_transform)

    def _built(self, dataset: _D | None, split: str) -> _D:
        """``dataset`` after :meth:`setup` has built it."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no {split} dataset: setup() did not build one.")
        return dataset

    @property
    def targets(self) -> np.ndarray:
        """Training labels in index order (loads the data set if needed)."""
        self.setup()
        return self._built(self.train_dataset, "training").targets

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._built(self.train_dataset, "training"), shuffle=True)

    def _val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._built(self.val_dataset, "validation"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self._built(self.test_dataset, "test"), shuffle=False)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (fine labels) from ``torchvision.datasets.CIFAR100``; otherwise as :class:`CIFAR10DataModule`.

    ``root`` holds (or will hold) ``cifar-100-python``.
    """

    dataset_class: ClassVar[type[torchvision.datasets.CIFAR10]] = torchvision.datasets.CIFAR100
    num_classes: ClassVar[int] = 100
    mean: ClassVar[tuple[float, float, float]] = (0.5071, 0.4865, 0.4409)
    std: ClassVar[tuple[float, float, float]] = (0.2673, 0.2564, 0.2762)
