"""Entropy of the predictions at the end of training (the "uncertainty" baseline of coreset studies).

``H(i) = -sum_c p(i)_c log p(i)_c`` (natural log) of the softmax of sample i's logits. Higher = the
trained model is unsure about the sample = keep.

Which predictions ("the last epoch"):

* ``Entropy()``: the training forward pass of the final epoch the run completes. Every epoch
  overwrites one float per sample, so the scores exist whenever training stops, early stopping
  included.
* ``Entropy(epoch=e)``: the training forward pass of epoch ``e`` (counted from 0) only.
* ``Entropy(source="eval_pass")``: one no-grad, eval-mode pass over the training set with the final
  model when training ends (see :mod:`lightning_prune.collectors.eval_pass`; pass ``dataloader=``
  a loader with the test-time transform to avoid augmentation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_prune.collectors.base import BatchView, ScoreCollector
from lightning_prune.collectors.eval_pass import EvalPassMixin
from lightning_prune.selection.meaning import ScoreMeaning


class Entropy(EvalPassMixin, ScoreCollector):
    """Prediction entropy at the end of training; higher = keep.

    Args:
        epoch: score the training forward pass of this epoch only (default: the final epoch run).
        source: ``"train"`` (default) or ``"eval_pass"`` (one inference pass when training ends).
        dataloader: for ``source="eval_pass"``, the loader to run (default: the train dataloader).
        **kwargs: see :class:`~lightning_prune.collectors.base.ScoreCollector`.

    State: one float32 value per sample.
    """

    method = "entropy"
    score_meaning = ScoreMeaning.DIFFICULTY
    _eval_schedule = "end"

    def __init__(
        self,
        epoch: int | None = None,
        *,
        source: str = "train",
        dataloader: DataLoader | None = None,
        **kwargs: Any,
    ) -> None:
        if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
            raise ValueError(f"Entropy epoch must be None (the final epoch) or an epoch number >= 0, got {epoch!r}.")
        self._set_source(source, dataloader)
        if epoch is not None and source == "eval_pass":
            raise ValueError(
                "Entropy(source='eval_pass') scores the final model once training ends; epoch= selects a training "
                "epoch's forward pass instead. Use one or the other."
            )
        self.epoch = epoch
        super().__init__(**kwargs)

    def hparams(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "source": self.source}

    def _epochs_needed(self) -> tuple[str, int] | None:
        return None if self.epoch is None else (f"epoch={self.epoch}", self.epoch + 1)  # epochs count from 0

    def _allocate(self, num_samples: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        return {"entropy": torch.zeros(num_samples, dtype=torch.float32, device=device)}

    def _collects(self, epoch: int) -> bool:
        return self.epoch is None or epoch == self.epoch

    def _collect(self, epoch: int, view: BatchView, fresh: Tensor) -> None:
        log_probs = torch.log_softmax(view.logits.float(), dim=1)
        entropy = -(log_probs.exp() * log_probs).sum(dim=1)
        self._write(self._buffers["entropy"], view.indices, entropy, fresh)

    def _epoch_rows(self, epoch: int) -> list[Tensor]:
        return [self._buffers["entropy"]]

    def _fold(self, epoch: int, seen: Tensor) -> None:
        """Nothing to accumulate: the newest epoch's entropies are the scores."""

    def _compute(self) -> Tensor:
        return self._buffers["entropy"]
