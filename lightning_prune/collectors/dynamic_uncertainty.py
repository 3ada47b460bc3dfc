"""Dynamic uncertainty (He et al., "Large-scale Dataset Pruning with Dynamic Uncertainty", 2023).

For each sample, the probability of its label ``p_t(i)_y`` is recorded every epoch. Over every
window of J consecutive epochs (sliding by one, ``k = 0 .. T-J``), the uncertainty is the standard
deviation of those J values; the score is the mean over windows:

    ``U(i) = mean_k std(p_k(i)_y, ..., p_{k+J-1}(i)_y)``

The standard deviation uses the ``J - 1`` denominator (sample standard deviation); as J is the same
for every sample, the choice rescales all scores alike and leaves the ranking unchanged. Higher =
the prediction keeps moving = keep.

Streaming: the epoch's ``p_y``, the J - 1 values before it and a running sum of window deviations,
``(J + 1)`` float32 values per sample; nothing else is kept.

Where ``p_y`` comes from: by default the training forward pass (train mode, augmented, before the
optimiser step), like every other collector here. ``source="eval_pass"`` reads it from a separate
no-grad pass in eval mode after every epoch (see :mod:`lightning_prune.collectors.eval_pass`): pass
``dataloader=`` an unshuffled loader of the training set with the test-time transform, or leave it
out to reuse the train dataloader in eval mode. Under DDP each rank runs its shard and the rows are
exchanged like training rows.

Differences from the official code, documented rather than copied: (1) the official code runs its
no-grad forward on every training batch's non-augmented inputs just *before* that batch's optimiser
step, so each sample's ``p_y`` comes from the model part-way through the epoch; ``eval_pass`` here
uses the model as it stands at the epoch's end, the same model for every sample. (2) The official
code averages the windows ``k = 0 .. T-J-1``, leaving out the window that ends at the last epoch;
this collector includes it (``T - J + 1`` windows). Both change scores by a small amount and keep the
definition of the paper (a window's standard deviation, averaged over windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_prune.collectors.arguments import is_integer
from lightning_prune.collectors.averaged import target_probabilities
from lightning_prune.collectors.base import BatchView, EpochNeed, ScoreCollector
from lightning_prune.collectors.eval_pass import EvalPassMixin
from lightning_prune.collectors.state import PerSample
from lightning_prune.selection.meaning import ScoreMeaning


class DynamicUncertainty(EvalPassMixin, ScoreCollector):
    """Mean sliding-window standard deviation of the label's probability; higher = keep.

    Args:
        window: J, the window length in epochs (paper: 10), at least 2.
        source: ``"train"`` (default: the training forward pass) or ``"eval_pass"`` (official code:
            a no-grad, eval-mode pass after every epoch).
        dataloader: for ``source="eval_pass"``, the loader to run (default: the train dataloader).
        **kwargs: see :class:`~lightning_prune.collectors.base.ScoreCollector`.

    State: J + 1 float32 values per sample. Subclasses change the statistic of a window with
    :meth:`window_score`.
    """

    method = "dynamic_uncertainty"
    score_meaning = ScoreMeaning.DIFFICULTY
    eval_schedule = "epoch"

    def __init__(
        self, window: int = 10, *, source: str = "train", dataloader: DataLoader | None = None, **kwargs: Any
    ) -> None:
        if not is_integer(window) or window < 2:
            raise ValueError(
                f"DynamicUncertainty window must be an integer >= 2 (a standard deviation needs two epochs), "
                f"got {window!r}. The paper uses window=10."
            )
        self.window = int(window)
        self._set_source(source, dataloader)
        super().__init__(**kwargs)

    @override
    def needs(self) -> EpochNeed:
        return EpochNeed(
            f"window={self.window}",
            self.window,
            to_score=self.window,
            describe=f"one full window of {self.window} epochs",
        )

    @override
    def state_spec(self) -> dict[str, PerSample]:
        return {
            "target_prob": PerSample(reduce="last"),  # this epoch's p_y
            "earlier_probs": PerSample(reduce=None, shape=(self.window - 1,)),  # the J - 1 before it, a ring
            "uncertainty_sum": PerSample(reduce=None),
        }

    @override
    def batch_values(self, view: BatchView) -> dict[str, Tensor]:
        return {"target_prob": target_probabilities(view)}

    def window_score(self, window: Tensor) -> Tensor:
        """The statistic of one window, ``[N, J]`` label probabilities (in no particular epoch order),
        that the score averages over windows: their sample standard deviation."""
        return window.std(dim=1, correction=1)

    @override
    def fold(self, epoch: int, values: Mapping[str, Tensor], state: dict[str, Tensor], seen: Tensor) -> None:
        current, earlier = values["target_prob"], state["earlier_probs"]
        if self.epochs_collected + 1 >= self.window:  # this epoch completes a window
            state["uncertainty_sum"] += self.window_score(torch.cat([earlier, current[:, None]], dim=1))
        earlier[:, self.epochs_collected % (self.window - 1)] = current  # replaces the oldest

    @override
    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        windows = self.epochs_collected - self.window + 1
        return state["uncertainty_sum"] / windows
