"""Indexed datasets, the pruned datamodule and the built-in datamodules."""

from lightning_prune.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_prune.data.digits import DigitsDataModule
from lightning_prune.data.indexed import IndexedDataset, dataset_targets, unpack_batch
from lightning_prune.data.pruned import PrunedDataModule, SelectionSampler, WeightedDataset
from lightning_prune.data.tabular import TabularDataModule

__all__ = [
    "CIFAR100DataModule",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "IndexedDataset",
    "PrunedDataModule",
    "SelectionSampler",
    "TabularDataModule",
    "WeightedDataset",
    "dataset_targets",
    "unpack_batch",
]
