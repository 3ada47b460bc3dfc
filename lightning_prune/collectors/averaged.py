"""Collectors that average a per-sample quantity over a range of training epochs (EL2N, GraNd, AUM).

They use the public collector contract: one state, ``total``, with ``reduce="sum"``; each epoch in
the range the quantity of every sample is written to an epoch row (first presentation wins) and,
once exchanged across ranks, added to ``total``. The score is ``total / epochs seen``: two float32
values per sample, whatever the number of epochs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.arguments import is_integer
from lightning_prune.collectors.base import BatchView, EpochNeed, ScoreCollector
from lightning_prune.collectors.state import PerSample

Epochs = int | tuple[int, int] | None
"""``n`` (the first n epochs), ``(start, stop)`` (epochs start..stop-1) or ``None`` (all, where allowed)."""


def parse_epochs(epochs: Epochs, owner: str, *, allow_all: bool = False) -> tuple[int, int | None]:
    """``epochs`` as a half-open range ``(start, stop)``.

    ``n`` means the first n epochs, ``(start, stop)`` epochs ``start .. stop-1`` counted from 0, and
    ``None`` (where ``allow_all``) every epoch of the run (``stop`` is then ``None``).
    """
    if epochs is None and allow_all:
        return 0, None
    if is_integer(epochs):
        if epochs < 1:
            raise ValueError(f"{owner} epochs={epochs}: a count of epochs must be >= 1.")
        return 0, int(epochs)
    if isinstance(epochs, (tuple, list)) and len(epochs) == 2 and all(is_integer(value) for value in epochs):
        start, stop = (int(value) for value in epochs)
        if not 0 <= start < stop:
            raise ValueError(
                f"{owner} epochs={tuple(epochs)} is not a range (start, stop) with 0 <= start < stop; e.g. "
                "epochs=(0, 10) averages epochs 0..9."
            )
        return start, stop
    accepted = "an int n (the first n epochs) or a pair (start, stop)" + (", or None (all epochs)" if allow_all else "")
    raise TypeError(f"{owner} epochs must be {accepted}; got {epochs!r}.")


class EpochAverageCollector(ScoreCollector):
    """Base of the collectors that average a per-epoch, per-sample value over an epoch range.

    Subclasses return the value for one batch from :meth:`batch_values` as ``{"total": [B]}`` and may
    override :meth:`score` (e.g. to negate the mean into a higher = keep score). ``all_epochs``
    (class attribute) lets ``epochs=None`` mean every epoch of the run.
    """

    all_epochs: ClassVar[bool] = False

    def __init__(self, epochs: Epochs, **kwargs: Any) -> None:
        self.start, self.stop = parse_epochs(epochs, type(self).__name__, allow_all=self.all_epochs)
        super().__init__(**kwargs)

    @property
    def epochs(self) -> tuple[int, int | None]:
        """The half-open epoch range ``(start, stop)`` averaged over; ``stop=None`` means to the end."""
        return self.start, self.stop

    @override
    def needs(self) -> EpochNeed:
        if self.stop is None:
            return EpochNeed(
                setting=f"epochs=({self.start}, None)",
                epochs=self.start + 1,
                describe=f"one full epoch in the range starting at epoch {self.start}",
                what=f"starts averaging at epoch {self.start}",
            )
        return EpochNeed(
            setting=f"epochs=({self.start}, {self.stop})",
            epochs=self.stop,
            describe=f"one full epoch in the range starting at epoch {self.start}",
            what=f"averages epochs {self.start}..{self.stop - 1}",
        )

    @override
    def state_spec(self) -> dict[str, PerSample]:
        return {"total": PerSample(reduce="sum")}

    @override
    def collects(self, epoch: int) -> bool:
        return self.start <= epoch and (self.stop is None or epoch < self.stop)

    @override
    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        """The mean of the per-epoch values over the epochs each sample was seen in."""
        if self.stop is not None and self.epochs_collected < self.stop - self.start:
            rank_zero_warn(
                f"{type(self).__name__} scores average {self.epochs_collected} of the {self.stop - self.start} "
                f"epochs in ({self.start}, {self.stop}) (the run ended early)."
            )
        # per-sample count: a sample missing from a partial epoch is averaged over the epochs it was in
        return state["total"] / state["times_seen"].clamp_min(1).to(torch.float32)


def target_probabilities(view: BatchView) -> Tensor:
    """``softmax(logits)[i, y_i]`` in float32."""
    probs = torch.softmax(view.logits.float(), dim=1)
    return probs.gather(1, view.targets.reshape(-1, 1)).reshape(-1)


def error_norm(view: BatchView) -> Tensor:
    """``|| softmax(logits) - onehot(y) ||_2`` per sample, in float32."""
    probs = torch.softmax(view.logits.float(), dim=1)
    error = probs - torch.nn.functional.one_hot(view.targets, probs.shape[1]).to(probs.dtype)
    return error.norm(dim=1)
