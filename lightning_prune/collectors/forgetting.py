"""Forgetting events (Toneva et al., ICLR 2019).

For each presentation of a sample in the training forward pass, record whether the prediction was
correct. A forgetting event is a correct -> incorrect transition between consecutive presentations.
The score is the number of events; a sample never classified correctly gets the number of epochs it
was seen (official behaviour), so it ranks as most important.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_prune.collectors.base import BatchView, ScoreCollector
from lightning_prune.selection.meaning import ScoreMeaning

_NOT_SEEN = -1


class Forgetting(ScoreCollector):
    """Counts forgetting events per sample; higher = more often forgotten = keep.

    Example::

        >>> import lightning as L
        >>> import lightning_prune as lp
        >>> dm = lp.DigitsDataModule(batch_size=256)
        >>> quiet = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...              enable_model_summary=False)
        >>> forgetting = lp.Forgetting()
        >>> L.Trainer(max_epochs=3, callbacks=[forgetting], **quiet).fit(lp.Classifier(lp.SmallCNN()), datamodule=dm)
        >>> selection = lp.select(forgetting.scores, prune_ratio=0.3)
        >>> pruned = (~selection.mask()).nonzero()[0]  # the indices left out
        >>> len(pruned), len(selection)
        (323, 755)
    """

    method = "forgetting"
    score_meaning = ScoreMeaning.DIFFICULTY

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def _allocate(self, num_samples: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        return {
            "correct_now": torch.zeros(num_samples, dtype=torch.bool, device=device),
            "correct_before": torch.full((num_samples,), _NOT_SEEN, dtype=torch.int8, device=device),
            "forgetting_events": torch.zeros(num_samples, dtype=torch.int32, device=device),
            "ever_learned": torch.zeros(num_samples, dtype=torch.bool, device=device),
        }

    def _collect(self, epoch: int, view: BatchView, fresh: Tensor) -> None:
        correct = view.logits.argmax(dim=1) == view.targets
        self._write(self._buffers["correct_now"], view.indices, correct, fresh)

    def _epoch_rows(self, epoch: int) -> list[Tensor]:
        return [self._buffers["correct_now"]]

    def _fold(self, epoch: int, seen: Tensor) -> None:
        correct = self._buffers["correct_now"] & seen
        before = self._buffers["correct_before"]
        forgotten = seen & (before == 1) & ~correct
        self._buffers["forgetting_events"] += forgotten.to(torch.int32)
        self._buffers["ever_learned"] |= correct
        before.copy_(torch.where(seen, correct.to(torch.int8), before))

    def _compute(self) -> Tensor:
        buffers = self._buffers
        never_learned_score = buffers["times_seen"].to(torch.float64)
        return torch.where(buffers["ever_learned"], buffers["forgetting_events"].to(torch.float64), never_learned_score)
