"""``DigitsDataModule``: scikit-learn's bundled 8x8 digits, the library's no-download data set."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from lightning_prune.data.arrays import ArrayDataset, InMemoryDataModule, flip_labels, split_three_ways
from lightning_prune.data.indexed import IndexedDataset


class DigitsDataModule(InMemoryDataModule):
    """The 1797 8x8 handwritten digits bundled with scikit-learn (10 classes), split three ways.

    A fixed stratified split (``split_seed``) into train / validation / test, all disjoint: the
    training split is the data set that is scored and pruned; validation (for model selection, e.g.
    AdaPruner or checkpointing on ``val_acc``) and test are both held out, so the test split is
    never used to choose anything. Inputs are ``1x8x8`` float tensors, pixel values standardised
    with the training split's mean and standard deviation; no augmentation.

    Training items are ``(x, y, index)`` (:class:`IndexedDataset`); validation and test items are
    ``(x, y)``. The data are loaded on construction (a few milliseconds, no files), so
    ``train_dataset``, ``targets``, ``num_classes``, ``input_shape`` and ``split_indices`` (each
    split's positions in ``sklearn.datasets.load_digits()``) are available at once.

    Args:
        batch_size: batch size of every loader.
        val_fraction: fraction of all 1797 samples held out for validation (0: no validation split, and no
            validation loop).
        test_fraction: fraction of all 1797 samples held out for testing.
        split_seed: seed of the stratified split.
        num_workers: ``DataLoader`` worker processes.
        label_noise: fraction of the TRAINING labels replaced by another class, drawn uniformly (web-scale
            data is noisy; CCS and AUM were made for it). Validation and test labels stay clean, so
            accuracy is measured against the truth. ``clean_targets`` keeps the true training labels.
        noise_seed: seed of which labels are flipped and to what.
    """

    num_classes: int = 10
    input_shape: tuple[int, int, int] = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.25,
        split_seed: int = 0,
        num_workers: int = 0,
        label_noise: float = 0.0,
        noise_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if not 0.0 <= label_noise < 1.0:
            raise ValueError(
                f"label_noise={label_noise} must lie in [0, 1): it is the fraction of training labels flipped."
            )
        self.save_hyperparameters()
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1)
        labels = np.asarray(digits.target, dtype=np.int64)
        self.split_indices = split_three_ways(labels, val_fraction, test_fraction, split_seed)
        train_idx, val_idx, test_idx = (self.split_indices[name] for name in ("train", "val", "test"))
        mean, std = images[train_idx].mean(), images[train_idx].std()
        images = (images - mean) / std
        self.clean_targets = labels[train_idx]
        noisy = flip_labels(self.clean_targets, label_noise, self.num_classes, noise_seed)
        self.train_dataset = IndexedDataset(ArrayDataset(images[train_idx], noisy))
        self.val_dataset = ArrayDataset(images[val_idx], labels[val_idx])
        self.test_dataset = ArrayDataset(images[test_idx], labels[test_idx])
        self._enable_validation()
