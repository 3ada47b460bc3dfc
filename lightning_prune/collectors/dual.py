"""DUAL, "Difficulty and Uncertainty-Aware Lightweight" pruning (Cho et al., 2025), its score.

For each sample, the probability of its label ``p_t(i)_y`` is recorded during the first ``epochs``
epochs only (T; the paper uses 30 of a 200-epoch run on CIFAR, so the scoring run can stop early).
Over every window of J consecutive epochs (``k = 0 .. T-J``) the score multiplies the prediction's
uncertainty by its difficulty:

    ``DUAL(i) = mean_k [ 10 * std(p_k(i)_y .. p_{k+J-1}(i)_y) * (1 - mean(p_k(i)_y .. p_{k+J-1}(i)_y)) ]``

(sample standard deviation, ``J - 1`` denominator, and the factor 10, as the official code has them).
It is :class:`~lightning_prune.DynamicUncertainty`'s window statistic weighted by the window's
difficulty, so it shares that collector's ring of the last J values. Higher = uncertain and not yet
learned = keep. The mean label probability over the T epochs is stored as
``Scores.extras["confidence"]``: the ratio-adaptive sampling of the paper
(``select(..., strategy="dual")``, and ``"auto"``) draws from it.

Streaming: a ring of the last J values of ``p_y``, the running window sum and the running sum of
``p_y``: ``J + 2`` float32 values per sample.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_prune.collectors.dynamic_uncertainty import DynamicUncertainty
from lightning_prune.selection.meaning import ScoreMeaning

CONFIDENCE = "confidence"
"""``Scores.extras`` key of DUAL's mean label probability over its epochs."""


class DUAL(DynamicUncertainty):
    """Uncertainty x difficulty over sliding windows of the first ``epochs`` epochs; higher = keep.

    Args:
        epochs: T, the epochs scored, counted from the first (official: 30). Later epochs are not read,
            so a scoring run of T epochs is enough.
        window: J, the window length in epochs (official: 10), at least 2 and at most ``epochs``.
        **kwargs: see :class:`~lightning_prune.collectors.base.ScoreCollector`.

    State: J + 2 float32 values per sample. ``p_y`` comes from the training forward pass, as in the
    official code.
    """

    method = "dual"
    score_meaning = ScoreMeaning.DIFFICULTY

    def __init__(self, epochs: int = 30, window: int = 10, **kwargs: Any) -> None:
        for name, value in (("epochs", epochs), ("window", window)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ValueError(
                    f"DUAL {name} must be an integer >= 2, got {value!r}. The paper uses epochs=30, window=10."
                )
        if window > epochs:
            raise ValueError(f"DUAL window={window} cannot exceed epochs={epochs}: no full window would fit.")
        self.epochs = epochs
        super().__init__(window=window, **kwargs)

    def hparams(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "window": self.window}

    def collects(self, epoch: int) -> bool:
        return epoch < self.epochs

    def _epochs_needed(self) -> tuple[str, int]:
        return f"epochs={self.epochs}", self.epochs

    def _min_epochs(self) -> int:
        return self.epochs

    def _describe_need(self) -> str:
        return f"its {self.epochs} epochs"

    def _allocate(self, num_samples: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        buffers = super()._allocate(num_samples, num_classes, device)
        buffers["confidence_sum"] = torch.zeros(num_samples, dtype=torch.float32, device=device)
        return buffers

    def _fold(self, epoch: int, seen: Tensor) -> None:
        ring = self._buffers["target_probs"]
        self._buffers["confidence_sum"] += ring[self._slot(epoch)]
        if self._epochs_collected + 1 < self.window:  # this epoch is not yet counted
            return
        uncertainty = 10.0 * ring.std(dim=0, correction=1)
        self._buffers["uncertainty_sum"] += uncertainty * (1.0 - ring.mean(dim=0))

    def _extras(self) -> dict[str, Tensor]:
        return {CONFIDENCE: self._buffers["confidence_sum"] / self._epochs_collected}
