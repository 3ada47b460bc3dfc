"""What lightning-prune reads from a running ``Trainer`` that Lightning does not declare in its types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl


def trainer_callbacks(trainer: pl.Trainer) -> list[pl.Callback]:
    """The fit's callbacks (``Trainer.callbacks``, assigned by Lightning's callback connector)."""
    return list(trainer.callbacks)  # type: ignore[attr-defined]


def changes_epoch_length(trainer: pl.Trainer) -> bool:
    """Whether a callback of the fit serves a different number of batches in different epochs
    (it says so with ``varies_epoch_length = True``), so step counts fixed up front are wrong."""
    return any(getattr(callback, "varies_epoch_length", False) for callback in trainer_callbacks(trainer))


def fit_epoch(trainer: pl.Trainer) -> int:
    """The epoch the fit loop is in or about to start: what Lightning passes to ``sampler.set_epoch``."""
    current: Any = trainer.fit_loop.epoch_progress.current  # a processed-tracking progress, typed as its base
    return int(current.processed)


def reload_dataloaders_every(trainer: pl.Trainer) -> int:
    """``Trainer(reload_dataloaders_every_n_epochs=...)``, stored by the data connector, not declared."""
    return int(trainer.reload_dataloaders_every_n_epochs)  # type: ignore[attr-defined]


def reload_train_loader_every_epoch(trainer: pl.Trainer) -> None:
    """Make the fit loop rebuild (and so re-measure) the training loader at every epoch."""
    trainer.reload_dataloaders_every_n_epochs = 1  # type: ignore[attr-defined]


def limited_train_batches(trainer: pl.Trainer, batches: int) -> int:
    """How many of an epoch's ``batches`` the fit runs under ``Trainer(limit_train_batches=...)``, as
    Lightning's data connector counts them."""
    from lightning.pytorch.trainer.connectors.data_connector import _parse_num_batches
    from lightning.pytorch.trainer.states import RunningStage

    return int(_parse_num_batches(RunningStage.TRAINING, batches, trainer.limit_train_batches))


def accumulated_batches(trainer: pl.Trainer) -> int:
    """``Trainer(accumulate_grad_batches=...)``: batches per optimiser step."""
    return int(trainer.accumulate_grad_batches)


def val_check_settings(trainer: pl.Trainer) -> tuple[int | float, int | None]:
    """``(val_check_interval, check_val_every_n_epoch)`` as the Trainer stores them."""
    return trainer.val_check_interval, trainer.check_val_every_n_epoch


def checkpoint_completed_epochs(checkpoint: Mapping[str, Any]) -> int:
    """Epochs the checkpointed fit had finished (the epoch a resume starts in), read from the fit loop's
    saved progress: an end-of-epoch checkpoint is written after the epoch is processed but before
    Lightning counts it completed, so ``checkpoint["epoch"]`` (the fallback) is one short there."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", 0))


def unrepeated_distributed_sampler(dataset: Any, num_replicas: int, rank: int) -> Any:
    """Lightning's sampler that deals each sample to exactly one rank, without padding (the one its predict
    loop uses), so an evaluation under DDP counts every sample once."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)


def set_fit_length(trainer: pl.Trainer, *, max_steps: int, max_epochs: int) -> None:
    """Bound the fit to ``max_steps`` optimiser steps and ``max_epochs`` epochs after the Trainer is built
    (its fit loop holds both; ``Trainer.max_steps`` and ``estimated_stepping_batches`` read them)."""
    trainer.fit_loop.max_epochs = int(max_epochs)
    trainer.fit_loop.epoch_loop.max_steps = int(max_steps)


def batches_done_this_epoch(trainer: pl.Trainer) -> int:
    """Training batches fetched so far in the current epoch (the fit loop's batch progress)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)


def batches_processed_this_epoch(trainer: pl.Trainer) -> int:
    """Training batches whose ``training_step`` has run in the current epoch (counted from a checkpoint's
    restored progress when resuming; a checkpoint written in ``on_train_batch_end`` counts its batch)."""
    current: Any = trainer.fit_loop.epoch_loop.batch_progress.current  # a processed-tracking progress
    return int(current.processed)
