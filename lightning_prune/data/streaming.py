"""Training sets that split themselves across DDP ranks (LitData's ``StreamingDataset``): their size and their split.

A map-style data set is split by Lightning's ``DistributedSampler``; a streaming data set splits
itself, by the rank and world size it read when it was built, and its ``len()`` is this rank's
share. Collectors key their state by sample index over the whole data set, so they need the size of
that index space, and a split that matches the running process group. Nothing here imports LitData.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import lightning.pytorch as pl
import torch


def index_space_size(dataset: Any) -> int:
    """The number of sample indices ``dataset`` draws from: its ``full_size`` where it declares one, else ``len``.

    :class:`~lightning_prune.integrations.litdata.IndexedStreamingDataset` declares ``full_size``
    (the samples on disk, whatever rank's share or subset it serves).
    """
    full_size = getattr(dataset, "full_size", None)
    return int(full_size) if full_size is not None else len(dataset)


def check_streaming_split(dataset: Any, trainer: pl.Trainer, user: str) -> None:
    """Refuse a LitData ``StreamingDataset`` that DDP would hang on or train on duplicated shares.

    LitData reads the rank and world size when the data set is constructed. Built before
    ``Trainer.fit`` starts DDP, it reads world size 1 (or rank 0) on every rank, every rank streams
    the same samples, and the fit hangs in a gradient all-reduce once the ranks' batch counts differ.
    With ``drop_last=False`` under DDP the ranks' shares can also make different numbers of batches.
    On several processes the ranks agree in one collective, so every rank raises alike and none is
    left waiting in the next one.
    """
    litdata = sys.modules.get("litdata")
    if litdata is None or not isinstance(dataset, litdata.StreamingDataset):
        return
    env = dataset.distributed_env
    split_right = (env.world_size, env.global_rank) == (trainer.world_size, trainer.global_rank)
    if trainer.world_size == 1:
        if not split_right:
            raise ValueError(_early_split_message(user, dataset, [trainer.global_rank]))
        return
    batches = float(trainer.num_training_batches)
    row = torch.tensor([float(split_right), batches], dtype=torch.float64, device=trainer.strategy.root_device)
    rows = trainer.strategy.all_gather(row).reshape(-1, 2).cpu()
    wrong = [rank for rank, right in enumerate(rows[:, 0].tolist()) if not right]
    if wrong:
        raise ValueError(_early_split_message(user, dataset, wrong))
    counts = [int(count) if math.isfinite(count) else count for count in rows[:, 1].tolist()]
    if len(set(counts)) > 1:
        shares = ", ".join(f"rank {rank}: {count}" for rank, count in enumerate(counts))
        raise ValueError(
            f"{user}: the ranks' shares of this {type(dataset).__name__} make different numbers of batches per epoch "
            f"({shares}), and DDP would hang in the all-reduce of the batches only some ranks have. Leave drop_last "
            "at LitData's default under DDP (True), which evens the shares out by dropping the last "
            "N mod (world_size x batch_size) samples of each epoch (samples never seen get no score)."
        )


def _early_split_message(user: str, dataset: Any, ranks: list[int]) -> str:
    env = dataset.distributed_env
    return (
        f"{user}: the training set is a {type(dataset).__name__} split for another process group than this fit's "
        f"on rank(s) {ranks} (this rank's copy: rank {env.global_rank} of {env.world_size}): it was built before "
        "Trainer.fit started the process group, so the ranks would stream the same samples, or hang. Use "
        "lightning_prune.integrations.litdata.IndexedStreamingDataset (it takes the running group's split), or build "
        "the data set inside the LightningDataModule's setup() or train_dataloader()."
    )
