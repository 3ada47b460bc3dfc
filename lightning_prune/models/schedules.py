"""Learning-rate schedules that stay right when the number of batches per epoch changes.

A step-based cosine (``CosineAnnealingLR(T_max=trainer.estimated_stepping_batches)``) fixes the
number of steps when the optimiser is built, from the first epoch's loader. Dynamic pruning
(:class:`~lightning_prune.InfoBatch`) serves fewer batches in most epochs, so such a schedule
would stop far from zero. :func:`progress_cosine` follows the fraction of training done instead:
``(epochs completed + batches done in this epoch / batches in this epoch) / max_epochs``, read
from the trainer at every step. It ends at zero on the last step of the last epoch whatever each
epoch's length, and equals the step-based cosine when every epoch has the same length.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def training_progress(trainer: pl.Trainer) -> float:
    """The fraction of the fit done, in ``[0, 1]``, counting the current epoch's finished batches."""
    max_epochs = trainer.max_epochs
    if max_epochs is None or max_epochs < 1:
        raise ValueError(
            "A schedule that follows the training progress needs Trainer(max_epochs=...) (got "
            f"max_epochs={max_epochs}); with a step budget use a step-based schedule."
        )
    batches = trainer.num_training_batches
    # batches fetched this epoch; when a step's scheduler update runs, that batch is fully processed
    done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
    in_epoch = done / batches if 0 < batches < float("inf") else 0.0
    return min(1.0, (trainer.current_epoch + in_epoch) / max_epochs)


def progress_cosine(optimizer: Optimizer, trainer: pl.Trainer) -> LambdaLR:
    """A cosine from each group's initial learning rate to 0 over the fit, driven by :func:`training_progress`.

    Step it every optimiser step (``{"scheduler": ..., "interval": "step"}``). Its state is only the
    step count: the factor is recomputed from the trainer, so a resumed fit continues exactly.
    """

    def factor(_: int) -> float:  # a plain function: LambdaLR checkpoints the state of callable objects
        return 0.5 * (1.0 + math.cos(math.pi * training_progress(trainer)))

    return LambdaLR(optimizer, factor)
