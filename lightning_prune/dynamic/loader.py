"""The training loader of dynamic pruning: a sampler that serves each epoch's plan, with its weights.

:class:`DynamicSampler` asks its planner (:class:`~lightning_prune.InfoBatch`, :class:`~lightning_prune.RS2`) for the plan of the epoch being
served, permutes it with ``numpy.random.default_rng([seed, epoch])`` (the same on every rank), pads it
to a multiple of the world size with its first entries and deals it out round-robin, exactly as
:class:`~lightning_prune.SelectionSampler` deals a static selection: every rank runs the same number
of batches, as DDP needs; for a model with BatchNorm layers (which refuse a training batch of one
sample, and a plan's size changes every epoch), a share that would end in such a batch repeats its
first entry so that its last batch holds two. It yields ``(index, weight)`` pairs, so the weight reaches the dataset in
the main process and in worker processes alike; :class:`WeightedItems` appends it to the item (or
multiplies it into the weight the item already carries).

:class:`DynamicDataModule` rebuilds the wrapped module's training loader over that sampler. Over a
:class:`~lightning_prune.PrunedDataModule`, the pool is the static selection (and its seed and
shuffling); otherwise it is the whole training set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, cast, runtime_checkable

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from lightning_prune.data.indexed import dataset_length, dataset_targets
from lightning_prune.data.pruned import (
    SelectionSampler,
    attach_weight,
    epoch_order,
    loader_settings,
    rank_share,
    refuses_single_sample_batch,
    single_sample_padding,
    without_single_sample_batch,
)
from lightning_prune.data.wrapped import WrappedDataModule
from lightning_prune.dynamic.infobatch import EpochPlan
from lightning_prune.trainer_access import trainer_callbacks


@runtime_checkable
class EpochPlanner(Protocol):
    """What a dynamic method gives its sampler: each epoch's plan (:class:`~lightning_prune.InfoBatch`,
    :class:`~lightning_prune.RS2`)."""

    seed: int

    @property
    def epochs_collected(self) -> int:
        """Changes whenever the plans may change (the sampler caches a plan per epoch and this count)."""
        ...

    def serving_epoch(self, default: int) -> int:
        """The epoch the loader is built or iterated for; ``default`` (the sampler's epoch) outside a fit."""
        ...

    def plan(self, pool: np.ndarray, epoch: int) -> EpochPlan:
        """The samples of ``pool`` that ``epoch`` serves, and their weights (identical on every rank)."""
        ...

    def resumed_batches(self, epoch: int) -> int:
        """Batches of ``epoch`` trained before the mid-epoch checkpoint this fit resumed from (else 0): the
        sampler skips them, so the resumed epoch serves exactly the rest of its plan."""
        ...


class DynamicSampler(DistributedSampler):
    """Serves, each epoch, the samples its ``planner`` plans, as ``(index, weight)`` pairs.

    Args:
        planner: the callback that plans the epochs (:class:`~lightning_prune.InfoBatch`, :class:`~lightning_prune.RS2`).
        pool: the indices an epoch can serve (into the full training set).
        num_replicas, rank: the world size and this process's rank.
        shuffle: permute each epoch's plan (seeded by ``(seed, epoch)``); otherwise pool order.
        seed: base seed of the permutations.
        batch_size: the loader's batch size (a fit resumed mid-epoch skips the batches already trained).
        drop_last: the loader's.
        pad_single_sample_batch: repeat a share's first entry where its last batch would hold one sample
            (for models with BatchNorm layers; :class:`DynamicDataModule` sets it for them).
    """

    def __init__(
        self,
        planner: EpochPlanner,
        pool: np.ndarray,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        batch_size: int = 1,
        drop_last: bool = False,
        pad_single_sample_batch: bool = False,
    ) -> None:
        pool = np.asarray(pool, dtype=np.int64).reshape(-1)
        if pool.size == 0:
            raise ValueError("DynamicSampler needs at least one index to serve.")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must lie in [0, num_replicas={num_replicas}).")
        # DistributedSampler only reads len(dataset) here; each epoch's own length comes from its plan
        super().__init__(
            cast(Dataset, pool), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self.planner = planner
        self.pool = pool
        self.batch_size = int(batch_size)
        self.batch_drop_last = bool(drop_last)
        self.padded_batch_size = self.batch_size if pad_single_sample_batch else 1
        self._cached: tuple[tuple[int, int], EpochPlan] | None = None

    def epoch_plan(self) -> EpochPlan:
        """This epoch's plan; computed once per epoch and state (``len()`` and ``iter()`` both need it)."""
        epoch = self.planner.serving_epoch(default=self.epoch)
        key = (epoch, self.planner.epochs_collected)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self.planner.plan(self.pool, epoch))
        return self._cached[1]

    def __iter__(self) -> Iterator[tuple[int, float]]:
        plan = self.epoch_plan()
        size = plan.indices.size
        epoch = self.planner.serving_epoch(default=self.epoch)
        order = epoch_order(size, self.seed, epoch) if self.shuffle else np.arange(size)
        # len() stays the whole epoch's: Lightning counts the resumed batch indices on from the checkpoint's
        share = without_single_sample_batch(
            rank_share(order, self.num_replicas, self.rank), self.padded_batch_size, self.batch_drop_last
        )[self.planner.resumed_batches(epoch) * self.batch_size :]
        return iter(zip(plan.indices[share].tolist(), plan.weights[share].tolist(), strict=True))

    def __len__(self) -> int:
        share = -(-int(self.epoch_plan().indices.size) // self.num_replicas)
        return share + single_sample_padding(share, self.padded_batch_size, self.batch_drop_last)


def planned_sampler(trainer: pl.Trainer, planner: EpochPlanner) -> DynamicSampler:
    """The fit's training sampler, refused unless it is the one ``planner`` plans (else nothing is pruned)."""
    sampler = getattr(trainer.train_dataloader, "sampler", None)
    if not (isinstance(sampler, DynamicSampler) and sampler.planner is planner):
        name = type(planner).__name__
        raise ValueError(
            f"{name} plans each epoch through its own sampler, but the training loader uses "
            f"{type(sampler).__name__}, so every epoch would serve the whole data set. Fit with "
            f"trainer.fit(model, datamodule={name.lower()}.wrap(datamodule))."
        )
    batch_size = getattr(trainer.train_dataloader, "batch_size", None)
    if batch_size is not None and batch_size != sampler.batch_size:
        raise ValueError(
            f"The training loader's batch size is {batch_size} but its DynamicSampler was built with "
            f"batch_size={sampler.batch_size}, so a fit resumed mid-epoch would skip the wrong number of samples. "
            f"Build it with DynamicSampler(..., batch_size={batch_size}), or use {type(planner).__name__.lower()}"
            ".wrap(datamodule), which does."
        )
    return sampler


class WeightedItems(Dataset):
    """Reads ``dataset[index]`` for the ``(index, weight)`` keys a :class:`DynamicSampler` yields and
    appends the weight (tuples: ``(x, y, index, weight)``; dicts: ``"weight"``), multiplying it into a
    weight the item already carries (a weighted :class:`~lightning_prune.PrunedDataModule`)."""

    def __init__(self, dataset: Dataset, carries_weight: bool) -> None:
        self.dataset = dataset
        self.carries_weight = carries_weight

    def __len__(self) -> int:
        return dataset_length(self.dataset, "by DynamicDataModule")

    def __getitem__(self, key: Any) -> Any:
        index, weight = key if isinstance(key, tuple) else (key, 1.0)
        item = self.dataset[index]
        scale = torch.as_tensor(weight, dtype=torch.float32)
        return attach_weight(item, scale, "Dynamic pruning", multiply=self.carries_weight or isinstance(item, Mapping))

    @property
    def targets(self) -> np.ndarray:
        return dataset_targets(self.dataset)


class DynamicDataModule(WrappedDataModule):
    """Wraps any ``LightningDataModule`` (a :class:`~lightning_prune.PrunedDataModule` too) so that each
    epoch serves what ``planner`` plans. Usually made with ``infobatch.wrap(datamodule)`` or ``rs2.wrap(datamodule)``.

    The wrapped training loader's settings (batch size, ``drop_last``, workers, collate, ...) are kept;
    its sampler decides the pool: a :class:`~lightning_prune.SelectionSampler` gives its selection,
    seed and shuffling; a plain shuffled loader (``RandomSampler``) the whole set, shuffled with the
    planner's seed; an unshuffled one the whole set in order. Other samplers are refused.
    """

    def __init__(self, datamodule: pl.LightningDataModule, planner: EpochPlanner) -> None:
        super().__init__(datamodule)
        if not isinstance(planner, EpochPlanner):
            raise TypeError(
                f"DynamicDataModule needs a dynamic pruning callback (lightning_prune.InfoBatch or RS2), got "
                f"{type(planner).__name__}."
            )
        self.planner = planner

    def train_dataloader(self) -> DataLoader:
        self._check_planner()
        loader = self.wrapped_train_loader()
        if loader.batch_size is None and type(loader.batch_sampler) is not BatchSampler:
            raise TypeError(
                f"The wrapped training DataLoader uses a custom batch_sampler ({type(loader.batch_sampler).__name__}); "
                "DynamicDataModule can only rebuild loaders configured with batch_size."
            )
        pool, shuffle, seed = self._pool(loader)
        num_replicas, rank = self.world()
        sampler = DynamicSampler(
            self.planner,
            pool,
            num_replicas,
            rank,
            shuffle=shuffle,
            seed=seed,
            batch_size=int(loader.batch_size or 1),
            drop_last=bool(loader.drop_last),
            pad_single_sample_batch=refuses_single_sample_batch(self.trainer),
        )
        carries_weight = isinstance(loader.sampler, SelectionSampler) and _carries_weight(loader.dataset)
        return DataLoader(
            WeightedItems(loader.dataset, carries_weight),
            batch_size=loader.batch_size,
            sampler=sampler,
            drop_last=loader.drop_last,
            **loader_settings(loader),
        )

    def _check_planner(self) -> None:
        """Refuse to serve without the callback that plans the epochs: every epoch would be the full data."""
        trainer = self.trainer
        if trainer is not None and any(callback is self.planner for callback in trainer_callbacks(trainer)):
            return
        where = "no Trainer is attached" if trainer is None else "it is not among the Trainer's callbacks"
        name = type(self.planner).__name__
        var = name.lower()
        raise ValueError(
            f"This training loader was made by {var}.wrap(datamodule), but {where}, so no epoch would be "
            f"planned: every epoch would serve every sample with weight 1. Pass the same {name} to the Trainer: "
            f"pl.Trainer(callbacks=[{var}, ...]).fit(model, datamodule={var}.wrap(datamodule))."
        )

    def _pool(self, loader: DataLoader) -> tuple[np.ndarray, bool, int]:
        sampler = loader.sampler
        if isinstance(sampler, SelectionSampler):
            return sampler.indices, bool(sampler.shuffle), int(sampler.seed)
        size = dataset_length(loader.dataset, "by DynamicDataModule")
        if isinstance(sampler, RandomSampler):
            return np.arange(size), True, self.planner.seed
        if isinstance(sampler, SequentialSampler):
            return np.arange(size), False, self.planner.seed
        raise TypeError(
            f"DynamicDataModule cannot tell which samples the wrapped loader's {type(sampler).__name__} serves; "
            "give the wrapped train_dataloader() shuffle=True/False, or wrap a PrunedDataModule for a fixed subset."
        )


def _carries_weight(dataset: Dataset) -> bool:
    from lightning_prune.data.pruned import WeightedDataset

    return isinstance(dataset, WeightedDataset)
