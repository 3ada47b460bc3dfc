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

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_prune.collectors.arguments import is_integer
from lightning_prune.collectors.base import BatchView, EpochNeed, ScoreCollector
from lightning_prune.collectors.eval_pass import EvalPassMixin
from lightning_prune.collectors.state import PerSample
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
    eval_schedule = "end"

    def __init__(
        self,
        epoch: int | None = None,
        *,
        source: str = "train",
        dataloader: DataLoader | None = None,
        **kwargs: Any,
    ) -> None:
        if epoch is not None and (not is_integer(epoch) or epoch < 0):
            raise ValueError(f"Entropy epoch must be None (the final epoch) or an epoch number >= 0, got {epoch!r}.")
        self._set_source(source, dataloader)
        if epoch is not None and source == "eval_pass":
            raise ValueError(
                "Entropy(source='eval_pass') scores the final model once training ends; epoch= selects a training "
                "epoch's forward pass instead. Use one or the other."
            )
        self.epoch = None if epoch is None else int(epoch)
        super().__init__(**kwargs)

    @override
    def needs(self) -> EpochNeed | None:
        return None if self.epoch is None else EpochNeed(f"epoch={self.epoch}", self.epoch + 1)  # epochs count from 0

    @override
    def state_spec(self) -> dict[str, PerSample]:
        return {"entropy": PerSample(reduce="last")}  # the newest epoch's entropies are the scores

    @override
    def collects(self, epoch: int) -> bool:
        return self.epoch is None or epoch == self.epoch

    @override
    def batch_values(self, view: BatchView) -> dict[str, Tensor]:
        log_probs = torch.log_softmax(view.logits.float(), dim=1)
        return {"entropy": -(log_probs.exp() * log_probs).sum(dim=1)}

    @override
    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        return state["entropy"]
