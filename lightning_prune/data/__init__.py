"""Indexed datasets, the pruned datamodule and the built-in datamodules."""

from lightning_prune.data.indexed import IndexedDataset, dataset_targets, unpack_batch

__all__ = ["IndexedDataset", "dataset_targets", "unpack_batch"]
