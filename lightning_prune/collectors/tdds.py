"""TDDS: Temporal Dual-Depth Scoring (Zhang et al., CVPR 2024).

Inner depth: per epoch pair (t-1, t), the KL integrand with an absolute value per class, summed
over all classes, ``d_t = sum_c |p_t * (log p_t - log p_{t-1})|``. Outer depth: over each window
of K epochs (K-1 differences), the dispersion of d: ``||d - mean(d)||_2`` as in the official code,
or the biased variance as in the paper. Windows are combined by an exponential moving average,
the most recent window heaviest: ``S <- (1 - beta) * S + beta * v_k``.

Streaming: the state is one N x C buffer of the previous epoch's log-probabilities (float16 by
default), the epoch's difference and a ring of the K-2 before it; nothing is stacked across epochs,
and epochs after the trajectory return at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.arguments import is_integer
from lightning_prune.collectors.base import BatchView, EpochNeed, ScoreCollector
from lightning_prune.collectors.state import CLASSES, PerSample
from lightning_prune.selection.meaning import ScoreMeaning

LOG_EPS = 1e-8
_PRECISIONS = {"float16": torch.float16, "float32": torch.float32}
_DISPERSIONS = ("norm", "variance")


class TDDS(ScoreCollector):
    """Temporal Dual-Depth Scoring collector.

    Args:
        trajectory: number of epochs T used, counted from epoch 0.
        window: window length K in epochs (K-1 differences per window), 3 <= K <= T.
        decay: beta in (0, 1], the weight of the newest window in the moving average.
        dispersion: ``"norm"`` (official code: L2 norm of the deviations) or ``"variance"`` (paper).
        precision: dtype of the N x C previous-epoch buffer, ``"float16"`` (half the memory; scores
            agree with float32 to about 1e-3 relative) or ``"float32"``.
        **kwargs: see :class:`~lightning_prune.collectors.base.ScoreCollector`.

    Example::

        >>> import lightning as L
        >>> import lightning_prune as lp
        >>> dm = lp.DigitsDataModule(batch_size=256)
        >>> quiet = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...              enable_model_summary=False)
        >>> tdds = lp.TDDS(trajectory=3, window=3, decay=0.9)  # CIFAR in the paper: 30, 10, 0.9
        >>> L.Trainer(max_epochs=3, callbacks=[tdds], **quiet).fit(lp.Classifier(lp.SmallCNN()), datamodule=dm)
        >>> len(tdds.scores)  # one score per training sample
        1078
        >>> tdds.scores.save("tdds.npz").name
        'tdds.npz'
    """

    method = "tdds"
    score_meaning = ScoreMeaning.DIFFICULTY
    records_predictions = True  # the label the training predicts: lp.mislabelled, and auto's label-noise evidence

    def __init__(
        self,
        trajectory: int = 30,
        window: int = 10,
        decay: float = 0.9,
        *,
        dispersion: str = "norm",
        precision: str = "float16",
        **kwargs: Any,
    ) -> None:
        if not is_integer(trajectory) or trajectory < 3:
            raise ValueError(f"TDDS trajectory must be an integer number of epochs >= 3, got {trajectory!r}.")
        if not is_integer(window) or window < 3:
            raise ValueError(
                f"TDDS window must be an integer >= 3, got {window!r}: a window of K epochs holds K-1 "
                "differences, and fewer than two have no spread."
            )
        if window > trajectory:
            raise ValueError(
                f"TDDS window ({window}) is larger than the trajectory ({trajectory}): no window fits. "
                "Use window <= trajectory (the official defaults are trajectory=30, window=10)."
            )
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"TDDS decay must lie in (0, 1], got {decay}.")
        if dispersion not in _DISPERSIONS:
            raise ValueError(f"TDDS dispersion must be one of {_DISPERSIONS}, got {dispersion!r}.")
        if precision not in _PRECISIONS:
            raise ValueError(f"TDDS precision must be one of {tuple(_PRECISIONS)}, got {precision!r}.")
        self.trajectory = int(trajectory)
        self.window = int(window)
        self.decay = float(decay)
        self.dispersion = dispersion
        self.precision = precision
        super().__init__(**kwargs)

    @override
    def needs(self) -> EpochNeed:
        return EpochNeed(
            f"trajectory={self.trajectory}",
            self.trajectory,
            to_score=self.window,
            describe=f"one full window of {self.window} epochs",
        )

    @override
    def state_spec(self) -> dict[str, PerSample]:
        return {
            "previous_log_probs": PerSample(reduce="last", dtype=_PRECISIONS[self.precision], shape=(CLASSES,)),
            "change": PerSample(reduce="last"),  # d_t of this epoch
            "earlier_changes": PerSample(reduce=None, shape=(self.window - 2,)),  # the K-2 before it, a ring
            "score": PerSample(reduce=None),
        }

    @override
    def collects(self, epoch: int) -> bool:
        return epoch < self.trajectory

    @override
    def batch_values(self, view: BatchView) -> dict[str, Tensor]:
        probs = torch.softmax(view.logits.float(), dim=1)
        log_probs = torch.log(probs + LOG_EPS)
        if view.epoch:  # read before the base overwrites this batch's rows with the new log-probabilities
            previous = self.state["previous_log_probs"][view.indices].float()
            change = (probs * (log_probs - previous)).abs().sum(dim=1)
        else:  # epoch 0 has no previous epoch; fold() ignores it
            change = torch.zeros_like(probs[:, 0])
        return {"previous_log_probs": log_probs, "change": change}

    @override
    def fold(self, epoch: int, values: Mapping[str, Tensor], state: dict[str, Tensor], seen: Tensor) -> None:
        if epoch == 0:
            return
        change, earlier = values["change"], state["earlier_changes"]
        if epoch >= self.window - 1:  # K-1 differences: a full window
            differences = torch.cat([earlier, change[:, None]], dim=1)
            deviations = differences - differences.mean(dim=1, keepdim=True)
            spread = deviations.norm(dim=1) if self.dispersion == "norm" else deviations.pow(2).mean(dim=1)
            state["score"].mul_(1.0 - self.decay).add_(spread, alpha=self.decay)
        earlier[:, (epoch - 1) % (self.window - 2)] = change  # replaces the oldest

    @override
    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        if self.epochs_collected < self.trajectory:
            rank_zero_warn(
                f"TDDS scores use {self.epochs_collected} of the {self.trajectory} trajectory epochs "
                "(the run ended early)."
            )
        return state["score"]
