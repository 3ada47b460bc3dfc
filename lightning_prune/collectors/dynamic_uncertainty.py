"""Dynamic uncertainty (He et al., "Large-scale Dataset Pruning with Dynamic Uncertainty", 2023).

For each sample, the probability of its label ``p_t(i)_y`` is recorded every epoch. Over every
window of J consecutive epochs (sliding by one, ``k = 0 .. T-J``), the uncertainty is the standard
deviation of those J values; the score is the mean over windows:

    ``U(i) = mean_k std(p_k(i)_y, ..., p_{k+J-1}(i)_y)``

The standard deviation uses the ``J - 1`` denominator (sample standard deviation); as J is the same
for every sample, the choice rescales all scores alike and leaves the ranking unchanged. Higher =
the prediction keeps moving = keep.

Streaming: a ring of the last J values of ``p_y`` and a running sum of window deviations,
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

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_prune.collectors.averaged import target_probabilities
from lightning_prune.collectors.base import BatchView, ScoreCollector
from lightning_prune.collectors.eval_pass import EvalPassMixin
from lightning_prune.selection.meaning import ScoreMeaning


class DynamicUncertainty(EvalPassMixin, ScoreCollector):
    """Mean sliding-window standard deviation of the label's probability; higher = keep.

    Args:
        window: J, the window length in epochs (paper: 10), at least 2.
        source: ``"train"`` (default: the training forward pass) or ``"eval_pass"`` (official code:
            a no-grad, eval-mode pass after every epoch).
        dataloader: for ``source="eval_pass"``, the loader to run (default: the train dataloader).
        **kwargs: see :class:`~lightning_prune.collectors.base.ScoreCollector`.

    State: J + 1 float32 values per sample.
    """

    method = "dynamic_uncertainty"
    score_meaning = ScoreMeaning.DIFFICULTY
    _eval_schedule = "epoch"

    def __init__(
        self, window: int = 10, *, source: str = "train", dataloader: DataLoader | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(window, int) or isinstance(window, bool) or window < 2:
            raise ValueError(
                f"DynamicUncertainty window must be an integer >= 2 (a standard deviation needs two epochs), "
                f"got {window!r}. The paper uses window=10."
            )
        self.window = window
        self._set_source(source, dataloader)
        super().__init__(**kwargs)

    def hparams(self) -> dict[str, Any]:
        return {"window": self.window, "source": self.source}

    def _epochs_needed(self) -> tuple[str, int]:
        return f"window={self.window}", self.window

    def _min_epochs(self) -> int:
        return self.window

    def _describe_need(self) -> str:
        return f"one full window of {self.window} epochs"

    def _allocate(self, num_samples: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        return {
            "target_probs": torch.zeros(self.window, num_samples, dtype=torch.float32, device=device),
            "uncertainty_sum": torch.zeros(num_samples, dtype=torch.float32, device=device),
        }

    def _slot(self, epoch: int) -> int:
        return epoch % self.window

    def _collect(self, epoch: int, view: BatchView, fresh: Tensor) -> None:
        slot = self._buffers["target_probs"][self._slot(epoch)]
        self._write(slot, view.indices, target_probabilities(view), fresh)

    def _epoch_rows(self, epoch: int) -> list[Tensor]:
        return [self._buffers["target_probs"][self._slot(epoch)]]

    def _fold(self, epoch: int, seen: Tensor) -> None:
        if self._epochs_collected + 1 < self.window:  # this epoch is not yet counted
            return
        self._buffers["uncertainty_sum"] += self._buffers["target_probs"].std(dim=0, correction=1)

    def _compute(self) -> Tensor:
        windows = self._epochs_collected - self.window + 1
        return self._buffers["uncertainty_sum"] / windows
