"""Training budgets of the pipeline: how long each training runs, in optimiser steps.

Two protocols compare pruning methods (``budget:`` in a run):

``epochs``
    Each coreset trains ``train_epochs`` epochs over itself, so a smaller coreset costs less: the
    protocol of compute savings (the default, and what the papers' cost tables assume).
``steps``
    Each static coreset trains as many optimiser steps as the full-data training (the CCS / D2-Pruning
    protocol): the protocol of data efficiency (how small a data set keeps the accuracy), at full
    compute. Dynamic methods keep their epochs: their saving is inside the fit.

The ``full-budget`` baseline trains the full data for exactly the optimiser steps of a coreset of a
given size (``train_epochs`` epochs of it), so the two forward the same number of samples (within one
batch per epoch); its learning-rate schedule is fitted to that shorter run because the step limit is
set before the optimiser is configured (``Trainer.estimated_stepping_batches`` sees it, and
:class:`~lightning_prune.Classifier`'s cosine ends at 0 on the last step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning.pytorch as pl
from torch.utils.data import DataLoader, DistributedSampler
from typing_extensions import override

from lightning_prune.trainer_access import accumulated_batches, set_fit_length


@dataclass(frozen=True)
class TrainingProtocol:
    """What a budget means for the figures a report prints next to it."""

    words: str
    """The protocol in the words reports print next to their figures."""
    coreset_saves_compute: bool
    """Whether a coreset's training costs less than the full data's. Under equal steps it does not (it
    forwards fewer samples only because each epoch's last batch is smaller), so reports claim no reuse
    break-even there."""


PROTOCOLS = {
    "epochs": TrainingProtocol(
        "equal epochs: every coreset trains train_epochs epochs over itself (a smaller coreset costs less)", True
    ),
    "steps": TrainingProtocol(
        "equal steps: every static coreset trains the full-data training's optimiser steps (data efficiency "
        "at full compute)",
        False,
    ),
}
"""Each budget's protocol, by name."""


def steps_per_epoch(samples: int, world_size: int, batch_size: int, drop_last: bool, accumulate: int = 1) -> int:
    """Optimiser steps of one epoch over ``samples`` dealt to ``world_size`` ranks (padded as
    ``DistributedSampler`` and :class:`~lightning_prune.SelectionSampler` pad)."""
    share = -(-samples // world_size)
    batches = share // batch_size if drop_last else -(-share // batch_size)
    return -(-batches // max(1, accumulate))


class StepBudget(pl.Callback):
    """Stop a fit after the optimiser steps of ``epochs`` epochs over ``samples_per_epoch`` samples.

    Set at ``setup``, before ``configure_optimizers``, so a step-counted schedule (``CosineAnnealingLR``
    over ``trainer.estimated_stepping_batches``) is fitted to the budget and ends at its last step.
    ``max_epochs`` becomes the epochs the fit's own loader needs to reach the budget.

    Args:
        samples_per_epoch: the samples one epoch of the training the budget imitates serves.
        epochs: how many such epochs.
    """

    def __init__(self, samples_per_epoch: int, epochs: int) -> None:
        if samples_per_epoch < 1 or epochs < 1:
            raise ValueError(
                f"StepBudget needs positive samples_per_epoch and epochs, got {samples_per_epoch}, {epochs}."
            )
        self.samples_per_epoch = int(samples_per_epoch)
        self.epochs = int(epochs)
        self.max_steps: int | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            raise ValueError("StepBudget reads the training loader from the fit's data module: fit with datamodule=...")
        loader = datamodule.train_dataloader()
        if not isinstance(loader, DataLoader) or loader.batch_size is None:
            raise TypeError("StepBudget needs a training DataLoader built with batch_size.")
        world, accumulate = trainer.world_size, accumulated_batches(trainer)
        sampler = loader.sampler
        own_samples = len(sampler) * world if isinstance(sampler, DistributedSampler) else len(sampler)  # type: ignore[arg-type]
        own = steps_per_epoch(own_samples, world, loader.batch_size, loader.drop_last, accumulate)
        target = self.epochs * steps_per_epoch(
            self.samples_per_epoch, world, loader.batch_size, loader.drop_last, accumulate
        )
        self.max_steps = target
        set_fit_length(trainer, max_steps=target, max_epochs=math.ceil(target / own))
