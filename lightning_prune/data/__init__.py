"""Indexed datasets, the pruned datamodule and the built-in datamodules."""

from lightning_prune.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_prune.data.digits import DigitsDataModule
from lightning_prune.data.indexed import IndexedDataset, dataset_targets, unpack_batch
from lightning_prune.data.pruned import PrunedDataModule, SelectionSampler, WeightedDataset

__all__ = [
    "CIFAR100DataModule",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "IndexedDataset",
    "PrunedDataModule",
    "SelectionSampler",
    "WeightedDataset",
    "dataset_targets",
    "unpack_batch",
]
