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

One difference from the official repository (behaapyy/dual-pruning): its README passes the mask file
(the indices sorted by score) as ``--score-path`` to the coreset training; this library samples from
the scores themselves, as the paper describes.

Streaming: the last J values of ``p_y``, the running window sum and the running sum of ``p_y``:
``J + 2`` float32 values per sample, and the label the last epoch scored predicts (one int32,
``Scores.extras["predicted_label"]``: :func:`~lightning_prune.mislabelled` and ``auto``'s evidence of
wrong labels read it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.arguments import is_integer
from lightning_prune.collectors.base import EpochNeed
from lightning_prune.collectors.dynamic_uncertainty import DynamicUncertainty
from lightning_prune.collectors.state import PerSample
from lightning_prune.selection.meaning import ScoreMeaning

CONFIDENCE = "confidence"
"""``Scores.extras`` key of DUAL's mean label probability over its epochs."""


class DUAL(DynamicUncertainty):
    """Uncertainty x difficulty over sliding windows of the first ``epochs`` epochs; higher = keep.

    Args:
        epochs: T, the epochs scored, counted from the first (official: 30). Later epochs are not read,
            so a scoring run of T epochs is enough.
        window: J, the window length in epochs (official: 10), at least 2 and at most ``epochs``.
        **kwargs: ``source``, ``dataloader`` (see :class:`~lightning_prune.DynamicUncertainty`) and
            :class:`~lightning_prune.collectors.base.ScoreCollector`'s.

    State: J + 2 float32 values and one int32 (the predicted label) per sample. ``p_y`` comes from the
    training forward pass, as in the official code.
    """

    method = "dual"
    score_meaning = ScoreMeaning.DIFFICULTY
    records_predictions = True  # the label the training predicts: lp.mislabelled, and auto's label-noise evidence

    def __init__(self, epochs: int = 30, window: int = 10, **kwargs: Any) -> None:
        for name, value in (("epochs", epochs), ("window", window)):
            if not is_integer(value) or value < 2:
                raise ValueError(
                    f"DUAL {name} must be an integer >= 2, got {value!r}. The paper uses epochs=30, window=10."
                )
        if window > epochs:
            raise ValueError(f"DUAL window={window} cannot exceed epochs={epochs}: no full window would fit.")
        self.epochs = int(epochs)
        super().__init__(window=int(window), **kwargs)

    @override
    def collects(self, epoch: int) -> bool:
        return epoch < self.epochs

    @override
    def needs(self) -> EpochNeed:
        return EpochNeed(
            f"epochs={self.epochs}", self.epochs, to_score=self.epochs, describe=f"its {self.epochs} epochs"
        )

    @override
    def state_spec(self) -> dict[str, PerSample]:
        return {**super().state_spec(), "confidence_sum": PerSample(reduce=None)}

    @override
    def window_score(self, window: Tensor) -> Tensor:
        """The window's uncertainty (10 x its standard deviation, as the official code) times its
        difficulty (1 - its mean)."""
        return 10.0 * window.std(dim=1, correction=1) * (1.0 - window.mean(dim=1))

    @override
    def fold(self, epoch: int, values: Mapping[str, Tensor], state: dict[str, Tensor], seen: Tensor) -> None:
        state["confidence_sum"] += values["target_prob"]
        super().fold(epoch, values, state, seen)

    @override
    def extras(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {CONFIDENCE: state["confidence_sum"] / self.epochs_collected}
