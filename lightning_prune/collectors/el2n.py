"""EL2N: the error L2 norm (Paul et al., "Deep Learning on a Data Diet", NeurIPS 2021).

``EL2N(i) = || softmax(z_i) - onehot(y_i) ||_2`` from the logits of the training forward pass,
averaged over a range of early epochs. The paper averages over independent runs at one early
epoch; with a single run, averaging over the first few epochs is the common substitute (the CCS
code sums epochs 0..9; a sum and a mean rank samples identically). Higher = the model still errs
on the sample early in training = harder = keep.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.averaged import EpochAverageCollector, Epochs, error_norm
from lightning_prune.collectors.base import BatchView
from lightning_prune.selection.meaning import ScoreMeaning


class EL2N(EpochAverageCollector):
    """Mean error L2 norm over an epoch range; higher = harder = keep.

    Args:
        epochs: the epochs averaged: ``n`` for epochs ``0..n-1`` (default 10, as the CCS code), or a
            half-open range ``(start, stop)``. ``stop`` may not exceed the Trainer's ``max_epochs``.
        **kwargs: see :class:`~lightning_prune.collectors.base.ScoreCollector`.

    State: two float32 values per sample.

    Example::

        >>> import lightning as L
        >>> import lightning_prune as lp
        >>> dm = lp.DigitsDataModule(batch_size=256)
        >>> quiet = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...              enable_model_summary=False)
        >>> el2n = lp.EL2N(epochs=2)  # the paper: the first 10-20 epochs
        >>> L.Trainer(max_epochs=2, callbacks=[el2n], **quiet).fit(lp.Classifier(lp.SmallCNN()), datamodule=dm)
        >>> selection = lp.select(el2n.scores, prune_ratio=0.5)
        >>> len(selection), selection.num_samples
        (539, 1078)
    """

    method = "el2n"
    score_meaning = ScoreMeaning.DIFFICULTY
    records_predictions = True  # the label the training predicts, for lp.mislabelled

    def __init__(self, epochs: Epochs = 10, **kwargs: Any) -> None:
        super().__init__(epochs, **kwargs)

    @override
    def batch_values(self, view: BatchView) -> dict[str, Tensor]:
        return {"total": error_norm(view)}
