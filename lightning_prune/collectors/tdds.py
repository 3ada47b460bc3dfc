"""TDDS: Temporal Dual-Depth Scoring (Zhang et al., CVPR 2024).

Inner depth: per epoch pair (t-1, t), the KL integrand with an absolute value per class, summed
over all classes, ``d_t = sum_c |p_t * (log p_t - log p_{t-1})|``. Outer depth: over each window
of K epochs (K-1 differences), the dispersion of d: ``||d - mean(d)||_2`` as in the official code,
or the biased variance as in the paper. Windows are combined by an exponential moving average,
the most recent window heaviest: ``S <- (1 - beta) * S + beta * v_k``.

Streaming: the state is one N x C buffer of the previous epoch's log-probabilities (float16 by
default) and a ring of the last K-1 differences; nothing is stacked across epochs, and epochs after
the trajectory return at once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_prune.collectors.base import BatchView, ScoreCollector
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
        if not isinstance(trajectory, int) or trajectory < 3:
            raise ValueError(f"TDDS trajectory must be an integer number of epochs >= 3, got {trajectory!r}.")
        if not isinstance(window, int) or window < 3:
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
        self.trajectory = trajectory
        self.window = window
        self.decay = float(decay)
        self.dispersion = dispersion
        self.precision = precision
        super().__init__(**kwargs)

    def hparams(self) -> dict[str, Any]:
        return {
            "trajectory": self.trajectory,
            "window": self.window,
            "decay": self.decay,
            "dispersion": self.dispersion,
            "precision": self.precision,
        }

    def _epochs_needed(self) -> tuple[str, int]:
        return f"trajectory={self.trajectory}", self.trajectory

    def _min_epochs(self) -> int:
        return self.window

    def _describe_need(self) -> str:
        return f"one full window of {self.window} epochs"

    def _allocate(self, num_samples: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        return {
            "previous_log_probs": torch.zeros(
                num_samples, num_classes, dtype=_PRECISIONS[self.precision], device=device
            ),
            "differences": torch.zeros(self.window - 1, num_samples, dtype=torch.float32, device=device),
            "score": torch.zeros(num_samples, dtype=torch.float32, device=device),
        }

    def _collects(self, epoch: int) -> bool:
        return epoch < self.trajectory

    def _slot(self, epoch: int) -> int:
        return (epoch - 1) % (self.window - 1)

    def _collect(self, epoch: int, view: BatchView, fresh: Tensor) -> None:
        probs = torch.softmax(view.logits.float(), dim=1)
        log_probs = torch.log(probs + LOG_EPS)
        previous = self._buffers["previous_log_probs"]
        if epoch >= 1:
            change = (probs * (log_probs - previous[view.indices].float())).abs().sum(dim=1)
            self._write(self._buffers["differences"][self._slot(epoch)], view.indices, change, fresh)
        self._write(previous, view.indices, log_probs, fresh)

    def _epoch_rows(self, epoch: int) -> list[Tensor]:
        rows = [self._buffers["previous_log_probs"]]
        if epoch >= 1:
            rows.append(self._buffers["differences"][self._slot(epoch)])
        return rows

    def _fold(self, epoch: int, seen: Tensor) -> None:
        if epoch < self.window - 1:
            return
        differences = self._buffers["differences"]
        deviations = differences - differences.mean(dim=0, keepdim=True)
        if self.dispersion == "norm":
            spread = deviations.norm(dim=0)
        else:
            spread = deviations.pow(2).mean(dim=0)
        score = self._buffers["score"]
        score.mul_(1.0 - self.decay).add_(spread, alpha=self.decay)

    def _compute(self) -> Tensor:
        if self._epochs_collected < self.trajectory:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"TDDS scores use {self._epochs_collected} of the {self.trajectory} trajectory epochs "
                "(the run ended early)."
            )
        return self._buffers["score"]
