"""Forgetting events (Toneva et al., ICLR 2019).

For each presentation of a sample in the training forward pass, record whether the prediction was
correct. A forgetting event is a correct -> incorrect transition between consecutive presentations.
The score is the number of events; a sample never classified correctly gets the number of epochs it
was seen (official behaviour), so it ranks as most important.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.base import BatchView, ScoreCollector
from lightning_prune.collectors.state import PerSample
from lightning_prune.selection.meaning import ScoreMeaning

_NOT_SEEN = -1


class Forgetting(ScoreCollector):
    """Counts forgetting events per sample; higher = more often forgotten = keep.

    State: whether the latest presentation was correct (written from batches), and, carried from
    epoch to epoch by :meth:`fold`, the previous epoch's correctness, the events and whether the
    sample was ever learned: 1 + 1 + 4 + 1 bytes per sample.

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
    records_predictions = True  # the label the training predicts, for lp.mislabelled

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    @override
    def state_spec(self) -> dict[str, PerSample]:
        return {
            "correct_now": PerSample(reduce="last", dtype=torch.bool),
            "correct_before": PerSample(reduce=None, dtype=torch.int8, fill=_NOT_SEEN),
            "forgetting_events": PerSample(reduce=None, dtype=torch.int32),
            "ever_learned": PerSample(reduce=None, dtype=torch.bool),
        }

    @override
    def batch_values(self, view: BatchView) -> dict[str, Tensor]:
        return {"correct_now": view.logits.argmax(dim=1) == view.targets}

    @override
    def fold(self, epoch: int, values: Mapping[str, Tensor], state: dict[str, Tensor], seen: Tensor) -> None:
        correct = values["correct_now"] & seen
        before = state["correct_before"]
        forgotten = seen & (before == 1) & ~correct
        state["forgetting_events"] += forgotten.to(torch.int32)
        state["ever_learned"] |= correct
        before.copy_(torch.where(seen, correct.to(torch.int8), before))

    @override
    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        never_learned_score = state["times_seen"].to(torch.float64)
        return torch.where(state["ever_learned"], state["forgetting_events"].to(torch.float64), never_learned_score)
