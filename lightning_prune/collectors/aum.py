"""AUM: the area under the margin (Pleiss et al., NeurIPS 2020), as CCS uses it.

``margin_t(i) = p_t(i)_y - max_{c != y} p_t(i)_c`` from the training forward pass of epoch t
(``margin="logits"`` uses the logits instead, as Pleiss et al. define it; the CCS code and this
library's default use the probabilities). ``AUM(i)`` is the mean margin over the epochs; the
**accumulated margin** is its sum, exposed as ``scores.extras["accumulated_margin"]``.

Orientation: a low (negative) AUM marks a hard or mislabelled sample, one the model keeps assigning
to another class. Like the other difficulty scores here (EL2N, forgetting), and as the CCS and TDDS
comparisons use AUM, the hardest samples are the ones kept: ``scores.values = -AUM``, so higher =
harder = keep. ``select(..., strategy="ccs")`` reads the accumulated margin to cut off the hardest
(lowest-margin, likely mislabelled) fraction before its coverage sampling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.averaged import EpochAverageCollector, Epochs
from lightning_prune.collectors.base import BatchView
from lightning_prune.selection.meaning import ScoreMeaning

_MARGINS = ("probs", "logits")


class AUM(EpochAverageCollector):
    """Negative area under the margin; higher = lower margin = harder = keep.

    Args:
        epochs: ``None`` (default) for every epoch of the run, ``n`` for the first n, or ``(start, stop)``.
        margin: ``"probs"`` (default; CCS) or ``"logits"`` (Pleiss et al.).
        **kwargs: see :class:`~lightning_prune.collectors.base.ScoreCollector`.

    ``scores.extras["accumulated_margin"]`` holds the sum of the margins (not negated).
    State: two float32 values per sample.
    """

    method = "aum"
    score_meaning = ScoreMeaning.DIFFICULTY
    all_epochs = True
    records_predictions = True  # the label the training predicts, for lp.mislabelled

    def __init__(self, epochs: Epochs = None, *, margin: str = "probs", **kwargs: Any) -> None:
        if margin not in _MARGINS:
            raise ValueError(f"AUM margin must be one of {_MARGINS}, got {margin!r}.")
        self.margin = margin
        super().__init__(epochs, **kwargs)

    @override
    def batch_values(self, view: BatchView) -> dict[str, Tensor]:
        return {"total": self._margin(view)}

    def _margin(self, view: BatchView) -> Tensor:
        if view.logits.shape[1] < 2:
            raise ValueError(
                f"AUM needs at least 2 classes for a margin, got logits of shape {tuple(view.logits.shape)}."
            )
        values = view.logits.float()
        if self.margin == "probs":
            values = torch.softmax(values, dim=1)
        target = values.gather(1, view.targets.reshape(-1, 1)).reshape(-1)
        others = values.scatter(1, view.targets.reshape(-1, 1), float("-inf"))
        return target - others.max(dim=1).values

    @override
    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        return -super().score(state)

    @override
    def extras(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"accumulated_margin": state["total"].clone()}
