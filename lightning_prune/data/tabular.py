"""``TabularDataModule``: a synthetic tabular classification task the library makes, with no download.

A data set of another kind than images, to check claims beyond digits: scikit-learn's
``make_classification`` (Guyon's design: each class a few Gaussian clusters on the vertices of a
hypercube in an informative subspace, plus redundant and useless features), standardised with the
training split's statistics and split three ways like :class:`~lightning_prune.DigitsDataModule`.
The same arguments always make the same data.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import make_classification

from lightning_prune.data.arrays import ArrayDataset, InMemoryDataModule, flip_labels, split_three_ways
from lightning_prune.data.indexed import IndexedDataset


class TabularDataModule(InMemoryDataModule):
    """``num_samples`` rows of ``num_features`` features in ``num_classes`` classes, split train/val/test.

    Args:
        num_samples: rows in all three splits together.
        num_features: features per row (a quarter informative, a quarter redundant, the rest noise).
        num_classes: classes, each made of ``clusters_per_class`` Gaussian clusters.
        clusters_per_class: clusters per class (more = harder, multi-modal classes).
        class_sep: the hypercube's size: larger = easier.
        data_seed: seed of the data set itself.
        batch_size, val_fraction, test_fraction, split_seed, num_workers, label_noise, noise_seed: as
            for :class:`~lightning_prune.DigitsDataModule`.

    Training items are ``(x, y, index)``; validation and test items ``(x, y)``; ``x`` is a float32
    vector of ``num_features``.
    """

    def __init__(
        self,
        num_samples: int = 6000,
        num_features: int = 32,
        num_classes: int = 8,
        clusters_per_class: int = 3,
        class_sep: float = 1.0,
        data_seed: int = 0,
        batch_size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.25,
        split_seed: int = 0,
        num_workers: int = 0,
        label_noise: float = 0.0,
        noise_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if num_samples < 10 * num_classes or num_features < 4 or num_classes < 2:
            raise ValueError(
                f"Need num_samples >= 10 x num_classes, num_features >= 4 and num_classes >= 2; got {num_samples}, "
                f"{num_features} and {num_classes}."
            )
        if not 0.0 <= label_noise < 1.0:
            raise ValueError(
                f"label_noise={label_noise} must lie in [0, 1): it is the fraction of training labels flipped."
            )
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.input_shape = (num_features,)
        informative = max(2, num_features // 4)
        features, labels = make_classification(
            n_samples=num_samples,
            n_features=num_features,
            n_informative=informative,
            n_redundant=informative,
            n_classes=num_classes,
            n_clusters_per_class=clusters_per_class,
            class_sep=class_sep,
            flip_y=0.0,
            random_state=data_seed,
        )
        labels = np.asarray(labels, dtype=np.int64)
        self.split_indices = split_three_ways(labels, val_fraction, test_fraction, split_seed)
        train_idx, val_idx, test_idx = (self.split_indices[name] for name in ("train", "val", "test"))
        inputs = torch.as_tensor(features, dtype=torch.float32)
        mean, std = inputs[train_idx].mean(dim=0), inputs[train_idx].std(dim=0).clamp_min(1e-6)
        inputs = (inputs - mean) / std
        self.clean_targets = labels[train_idx]
        noisy = flip_labels(self.clean_targets, label_noise, num_classes, noise_seed)
        self.train_dataset = IndexedDataset(ArrayDataset(inputs[train_idx], noisy))
        self.val_dataset = ArrayDataset(inputs[val_idx], labels[val_idx])
        self.test_dataset = ArrayDataset(inputs[test_idx], labels[test_idx])
        self._enable_validation()
