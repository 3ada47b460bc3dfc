"""Training on a coreset: :class:`PrunedDataModule` and its rank-aware :class:`SelectionSampler`.

``PrunedDataModule(dm, selection)`` is a drop-in replacement for ``dm``: the training loader serves
only the selected samples; validation, test and prediction are ``dm``'s own, untouched.

How the training loader is built: the wrapped module's ``train_dataloader()`` is called and a new
``DataLoader`` is made over the same dataset with the same batch size, ``drop_last``, workers,
``collate_fn``, ``pin_memory`` and other settings, but with a :class:`SelectionSampler` over the
selected indices (the original loader's sampler and shuffling are replaced).

Ranks: :class:`SelectionSampler` is a ``torch.utils.data.DistributedSampler`` subclass. Lightning
injects its own ``DistributedSampler`` only into loaders whose sampler is not one
(``_DataConnector._requires_distributed_sampler``), so it leaves ours in place whatever
``Trainer(use_distributed_sampler=...)`` says, and it calls ``set_epoch`` on it every epoch. Each
epoch one permutation of the selection, seeded by ``(seed, epoch)`` and identical on all ranks, is
dealt out round-robin; rank r gets positions r, r + W, ... . When the selection size is not a
multiple of the world size W, the permutation is padded with its first few entries (at most W - 1
duplicates per epoch, as ``DistributedSampler`` does) so every rank runs the same number of
batches, which DDP needs. When the model has BatchNorm layers, which refuse a training batch of one
sample ("Expected more than 1 value per channel"), a rank's share that would end the epoch in such a
batch (a length of ``k x batch_size + 1`` without ``drop_last``) gets one more entry, its own first,
so that its last batch holds two: a coreset's size is the pruning ratio's, not one the user chose to
fit their batch size. Apart from this padding every selected sample is seen exactly once per epoch,
on exactly one rank.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Mapping
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from lightning_prune.data.indexed import dataset_length, dataset_targets
from lightning_prune.data.wrapped import WrappedDataModule
from lightning_prune.selection.selection import Selection

WEIGHT_KEY = "weight"

# DataLoader settings that PrunedDataModule rebuilds itself instead of copying.
_REBUILT = {"self", "dataset", "batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"}


def loader_settings(loader: DataLoader) -> dict[str, Any]:
    """Every setting of ``loader`` (workers, collate, pinning, generator, ...) except what decides
    which samples come in which batches, to rebuild it over another sampler."""
    settings = {
        name: getattr(loader, name)
        for name in inspect.signature(DataLoader.__init__).parameters
        if name not in _REBUILT and hasattr(loader, name)
    }
    if settings.get("num_workers", 0) == 0:
        # Only meaningful with worker processes; DataLoader rejects them otherwise.
        settings.pop("prefetch_factor", None)
        settings.pop("persistent_workers", None)
    return settings


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``size`` positions an epoch serves, the same on every rank."""
    # SeedSequence hashes (seed, epoch), so consecutive epochs get unrelated permutations
    # (torch.randperm under seeds s and s + 1 shares much of its order for small n).
    return np.random.default_rng([seed, epoch]).permutation(size)


def rank_share(order: np.ndarray, num_replicas: int, rank: int) -> np.ndarray:
    """``rank``'s positions of ``order`` dealt round-robin, after padding ``order`` with its first
    entries to a multiple of ``num_replicas`` (as ``DistributedSampler`` pads): every rank gets
    ``ceil(len(order) / num_replicas)``."""
    total = -(-order.size // num_replicas) * num_replicas
    return np.resize(order, total)[rank:total:num_replicas]


def refuses_single_sample_batch(trainer: pl.Trainer | None) -> bool:
    """Whether the model being fit has BatchNorm layers, which refuse a training batch of one sample."""
    module = getattr(trainer, "lightning_module", None) if trainer is not None else None
    return isinstance(module, torch.nn.Module) and any(isinstance(layer, _BatchNorm) for layer in module.modules())


def single_sample_padding(share_size: int, batch_size: int, drop_last: bool) -> int:
    """1 when a rank's ``share_size`` samples would leave a last batch of one, else 0 (see the module docs)."""
    return int(batch_size > 1 and not drop_last and share_size % batch_size == 1)


def without_single_sample_batch(share: np.ndarray, batch_size: int, drop_last: bool) -> np.ndarray:
    """``share`` with its first entry repeated at its end when its last batch would hold one sample;
    the number of batches stays the same, the last one holds two."""
    return np.concatenate([share, share[:1]]) if single_sample_padding(share.size, batch_size, drop_last) else share


class SelectionSampler(DistributedSampler):
    """Serves a fixed subset of indices, reshuffled every epoch and split across ranks.

    Args:
        indices: the indices to serve (into the full dataset).
        num_replicas: number of ranks (world size); 1 without distributed training.
        rank: this process's rank in ``[0, num_replicas)``.
        shuffle: permute every epoch (seeded by ``(seed, epoch)``, the same on every rank); when off,
            indices are served in the given order.
        seed: base seed of the permutations.
        batch_size, drop_last: the loader's, read with ``pad_single_sample_batch``.
        pad_single_sample_batch: repeat a share's first entry where its last batch would hold one sample
            (for models with BatchNorm layers; :class:`PrunedDataModule` sets it for them).

    Every rank yields ``ceil(len(indices) / num_replicas)`` indices per epoch (one more where a padded
    last batch would hold a single sample); see the module docs for the padding this implies.
    """

    def __init__(
        self,
        indices: np.ndarray | list[int],
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        batch_size: int = 1,
        drop_last: bool = False,
        pad_single_sample_batch: bool = False,
    ) -> None:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("SelectionSampler needs at least one index; the selection is empty.")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed={seed} must be a non-negative integer.")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must lie in [0, num_replicas={num_replicas}).")
        # DistributedSampler only needs len(dataset) to size the shares; the selection plays the dataset
        # (hence the cast: an index array is Sized, which is all it reads of a Dataset here).
        super().__init__(
            cast(Dataset, indices), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self.indices = indices
        # the batch layout the padding reads: a batch of one is only avoided when asked
        self.padded_batch_size = int(batch_size) if pad_single_sample_batch else 1
        self.batch_drop_last = bool(drop_last)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.indices.size, self.seed, self.epoch) if self.shuffle else np.arange(self.indices.size)
        share = without_single_sample_batch(
            rank_share(order, self.num_replicas, self.rank), self.padded_batch_size, self.batch_drop_last
        )
        return iter(self.indices[share].tolist())

    def __len__(self) -> int:
        return self.num_samples + single_sample_padding(self.num_samples, self.padded_batch_size, self.batch_drop_last)


def attach_weight(item: Any, weight: torch.Tensor, purpose: str, multiply: bool = False) -> Any:
    """``item`` with its training weight: appended to a tuple (``(x, y, index, weight)``), under ``"weight"``
    in a dict; ``multiply`` multiplies it into the weight the item already carries (the last element, or
    the dict's ``"weight"``)."""
    if isinstance(item, Mapping):
        return {**item, WEIGHT_KEY: weight * item[WEIGHT_KEY] if multiply and WEIGHT_KEY in item else weight}
    if isinstance(item, (tuple, list)):
        return (*item[:-1], item[-1] * weight) if multiply else (*item, weight)
    raise TypeError(
        f"{purpose} needs dataset items that are tuples or dicts to append the weight to, got {type(item).__name__}."
    )


class WeightedDataset(Dataset):
    """Appends each sample's training weight to the items of ``dataset``.

    Tuple items ``(x, y, index)`` become ``(x, y, index, weight)``; dict items get a ``"weight"``
    key. ``weight`` is a float32 scalar tensor, so batches carry a ``[B]`` float tensor. Samples
    outside the selection have weight 0 (the selection sampler never serves them).
    """

    def __init__(self, dataset: Dataset, weights: np.ndarray) -> None:
        self.dataset = dataset
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float32))

    def __len__(self) -> int:
        return dataset_length(self.dataset, "by WeightedDataset")

    def __getitem__(self, index: int) -> Any:
        return attach_weight(self.dataset[index], self.weights[index], "weighted=True")

    @property
    def targets(self) -> np.ndarray:
        return dataset_targets(self.dataset)


class PrunedDataModule(WrappedDataModule):
    """Wraps any ``LightningDataModule`` so that training sees only a :class:`Selection`.

    Args:
        datamodule: the data module of the full training set (its train dataset is what the
            selection indexes).
        selection: a :class:`Selection` or the path of a saved one (``.npz``).
        weighted: pass the selection's per-sample weights to the model: training items become
            ``(x, y, index, weight)`` (dict items get a ``"weight"`` key);
            :class:`~lightning_prune.models.Classifier` then minimises the weighted mean of the
            per-sample losses. Needs a selection with weights (``select(..., weights="importance")``).
            A custom ``collate_fn`` of the wrapped loader must accept the extra element.
        seed: base seed of the per-epoch permutations (epoch e uses ``numpy.random.default_rng([seed, e])``).
        shuffle: reshuffle every epoch (default); ``False`` serves the selection in index order.

    The selection is checked against the training set (size and label fingerprint) when the
    training loader is first built, and refused if it was made for another data set.
    """

    def __init__(
        self,
        datamodule: pl.LightningDataModule,
        selection: Selection | str,
        weighted: bool = False,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(datamodule)
        if isinstance(selection, (str, os.PathLike)):
            selection = Selection.load(selection)
        if not isinstance(selection, Selection):
            raise TypeError(
                f"selection must be a Selection or the path of a saved one, got {type(selection).__name__}."
            )
        if weighted and selection.weights is None:
            raise ValueError(
                f"weighted=True, but this {selection.method} selection has no weights. Make one with "
                "select(scores, ..., weights='importance'), or use weighted=False."
            )
        if len(selection) == 0:
            raise ValueError("The selection keeps no samples; there is nothing to train on.")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed={seed} must be a non-negative integer.")
        self.selection = selection
        self.weighted = bool(weighted)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self._checked_dataset: Dataset | None = None

    def train_dataloader(self) -> DataLoader:
        loader = self.wrapped_train_loader()
        batch_size, drop_last = loader.batch_size, loader.drop_last
        if batch_size is None:
            if type(loader.batch_sampler) is not BatchSampler:
                raise TypeError(
                    f"The wrapped training DataLoader uses a custom batch_sampler "
                    f"({type(loader.batch_sampler).__name__}); PrunedDataModule can only rebuild loaders "
                    "configured with batch_size. Use batch_size=... in the wrapped train_dataloader()."
                )
        dataset = loader.dataset
        self._check_selection(dataset)
        if self.weighted:
            weights = np.zeros(self.selection.num_samples, dtype=np.float32)
            weights[self.selection.indices] = self.selection.weights
            dataset = WeightedDataset(dataset, weights)
        num_replicas, rank = self.world()
        sampler = SelectionSampler(
            self.selection.indices,
            num_replicas,
            rank,
            shuffle=self.shuffle,
            seed=self.seed,
            batch_size=int(batch_size or 1),
            drop_last=drop_last,
            pad_single_sample_batch=refuses_single_sample_batch(self.trainer),
        )
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **loader_settings(loader)
        )

    def _check_selection(self, dataset: Dataset) -> None:
        if self._checked_dataset is dataset:
            return
        size = dataset_length(dataset, "by PrunedDataModule to check the selection against the training set")
        try:
            labels = dataset_targets(dataset)
        except (TypeError, KeyError, ValueError, IndexError) as error:
            labels = None
            rank_zero_warn(
                f"PrunedDataModule could not read the training labels ({error}); only the data-set size is "
                "checked against the selection. Give the training dataset a `targets` attribute to check both."
            )
        self.selection.check_dataset(size, labels)
        self._checked_dataset = dataset
