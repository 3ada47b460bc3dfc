"""What lightning-prune reads from a running ``Trainer`` that Lightning does not declare in its types."""

from __future__ import annotations

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


def unrepeated_distributed_sampler(dataset: Any, num_replicas: int, rank: int) -> Any:
    """Lightning's sampler that deals each sample to exactly one rank, without padding (the one its predict
    loop uses), so an evaluation under DDP counts every sample once."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
