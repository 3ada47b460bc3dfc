"""Learning-rate schedules that stay right when the number of batches per epoch changes.

A step-based cosine (``CosineAnnealingLR(T_max=trainer.estimated_stepping_batches)``) fixes the
number of steps when the optimiser is built, from the first epoch's loader. Dynamic pruning
(:class:`~lightning_prune.InfoBatch`) serves fewer batches in most epochs, so such a schedule
would stop far from zero. :func:`progress_cosine` follows the fraction of training done instead:
``(epochs completed + batches done in this epoch / batches in this epoch) / max_epochs``, or the
fraction of ``max_steps`` done where that is further along, read from the trainer at every step.
It ends at zero on the last step of the fit whatever each epoch's length, and equals the
step-based cosine when every epoch has the same length.

:func:`cosine_schedule` is what ``configure_optimizers`` of any model returns as its
``"lr_scheduler"`` to get the cosine :class:`~lightning_prune.Classifier` uses::

    from lightning_prune.models.schedules import cosine_schedule

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": optimizer, "lr_scheduler": cosine_schedule(optimizer, self.trainer)}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    CosineAnnealingLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
    PolynomialLR,
    SequentialLR,
)

from lightning_prune.trainer_access import batches_done_this_epoch, changes_epoch_length

FIXED_LENGTH_SCHEDULES = (CosineAnnealingLR, OneCycleLR, PolynomialLR)
"""Schedulers whose length is a step count fixed when they are built."""


def training_progress(trainer: pl.Trainer) -> float:
    """The fraction of the fit done, in ``[0, 1]``: of ``max_epochs`` (counting the current epoch's
    finished batches) or of ``max_steps``, whichever limit is closer to stopping the fit."""
    fractions = []
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 1:
        batches = trainer.num_training_batches
        # batches fetched this epoch; when a step's scheduler update runs, that batch is fully processed
        done = batches_done_this_epoch(trainer)
        in_epoch = done / batches if 0 < batches < float("inf") else 0.0
        fractions.append((trainer.current_epoch + in_epoch) / max_epochs)
    if trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    if not fractions:
        raise ValueError(
            "A schedule that follows the training progress needs Trainer(max_epochs=...) or Trainer(max_steps=...) "
            f"(got max_epochs={max_epochs}, max_steps={trainer.max_steps})."
        )
    return min(1.0, max(fractions))


class ProgressSchedule(LambdaLR):
    """The scheduler :func:`progress_schedule` builds (a ``LambdaLR``; its type tells checks what it is)."""


class ProgressCosine(ProgressSchedule):
    """The scheduler :func:`progress_cosine` builds."""


def progress_schedule(optimizer: Optimizer, trainer: pl.Trainer, shape: Callable[[float], float]) -> ProgressSchedule:
    """A learning-rate schedule of your own shape, in the fraction of training done instead of a step count.

    ``shape(progress)`` is the factor on each group's initial learning rate, ``progress`` in ``[0, 1]``
    from :func:`training_progress` (epochs done plus the current epoch's fraction, or ``max_steps``'
    fraction). A warm-up then linear decay over the whole fit is
    ``lambda p: min(1.0, p / 0.05) * (1.0 - p)``. Under dynamic pruning the epochs get shorter and a
    schedule counted in steps up to ``trainer.estimated_stepping_batches`` (measured on a full first
    epoch) would stop before its end; this one reaches it on the fit's last step. Return it stepped
    per optimiser step: ``{"scheduler": progress_schedule(...), "interval": "step"}`` (stepped per
    epoch it is refused).
    """
    if not callable(shape):
        raise TypeError(
            f"progress_schedule shape={shape!r} must be a function of the fraction of training done, "
            "progress -> learning-rate factor, e.g. lambda p: 1.0 - p."
        )
    return ProgressSchedule(optimizer, _progress_factor(trainer, shape))


def _progress_factor(trainer: pl.Trainer, shape: Callable[[float], float]) -> Callable[[int], float]:
    checked = [False]

    def factor(_: int) -> float:  # a plain function: LambdaLR checkpoints the state of callable objects
        if not checked[0] and trainer.lr_scheduler_configs:
            check_progress_schedules(trainer)
            checked[0] = True
        return float(shape(training_progress(trainer)))

    return factor


def progress_cosine(optimizer: Optimizer, trainer: pl.Trainer) -> ProgressCosine:
    """A cosine from each group's initial learning rate to 0 over the fit, driven by :func:`training_progress`.

    It must be stepped every optimiser step: return it as ``{"scheduler": ..., "interval": "step"}``
    (Lightning's default interval is ``"epoch"``, which this schedule refuses at its first step:
    stepped per epoch, the last epoch would train at the learning rate of the one before). Its
    state is only the step count: the factor is recomputed from the trainer, so a resumed fit
    continues exactly. :func:`cosine_schedule` returns it already configured.
    """
    return ProgressCosine(
        optimizer, _progress_factor(trainer, lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)))
    )


def cosine_schedule(optimizer: Optimizer, trainer: pl.Trainer) -> dict[str, Any]:
    """The ``"lr_scheduler"`` entry of ``configure_optimizers`` for a cosine to 0 over the whole fit.

    Stepped per optimiser step. With a callback that changes the number of batches per epoch
    (``varies_epoch_length = True``, e.g. :class:`~lightning_prune.InfoBatch`) it is
    :func:`progress_cosine`, which follows the fraction of training done; otherwise
    ``CosineAnnealingLR(T_max=trainer.estimated_stepping_batches)``. Either ends at 0.
    """
    if changes_epoch_length(trainer):
        scheduler: LRScheduler = progress_cosine(optimizer, trainer)
    else:
        scheduler = CosineAnnealingLR(optimizer, T_max=max(1, int(trainer.estimated_stepping_batches)))
    return {"scheduler": scheduler, "interval": "step"}


def _schedulers(scheduler: Any) -> Iterator[Any]:
    """``scheduler`` and the schedulers a ``SequentialLR`` / ``ChainedScheduler`` runs."""
    yield scheduler
    if isinstance(scheduler, (SequentialLR, ChainedScheduler)):
        for inner in scheduler._schedulers:
            yield from _schedulers(inner)


def check_progress_schedules(trainer: pl.Trainer) -> None:
    """Refuse a :func:`progress_cosine` that Lightning steps per epoch instead of per optimiser step."""
    for config in trainer.lr_scheduler_configs:
        schedules = [s for s in _schedulers(config.scheduler) if isinstance(s, ProgressSchedule)]
        if schedules and config.interval != "step":
            cosine = isinstance(schedules[0], ProgressCosine)
            name, arguments = ("progress_cosine", "") if cosine else ("progress_schedule", ", shape")
            raise ValueError(
                f'lp.{name} is configured with interval="{config.interval}"; it follows the training '
                'progress step by step and must be stepped every optimiser step: return {"scheduler": '
                f'{name}(optimizer, self.trainer{arguments}), "interval": "step"}} (or lightning_prune.models.schedules.'
                "cosine_schedule(optimizer, self.trainer), which sets it)."
            )


def fixed_length_step_schedules(trainer: pl.Trainer) -> list[str]:
    """The names of the fit's step-interval schedulers whose length is a step count fixed up front."""
    return [
        type(inner).__name__
        for config in trainer.lr_scheduler_configs
        if config.interval == "step"
        for inner in _schedulers(config.scheduler)
        if isinstance(inner, FIXED_LENGTH_SCHEDULES)
    ]
