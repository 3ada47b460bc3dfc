"""Checking every training batch a collector reads, without a host synchronisation per batch.

An epoch's first batch is checked on the host (shapes, class count, ranges; the one sync the
collectors allow inside an epoch). Every batch is screened on the device: rows with a NaN/inf
logit, an index outside the training set or a target outside the classes are counted in one small
summary tensor, bad rows are clamped into range (so no formula indexes out of bounds) and never
written. At the epoch's end the summaries of all ranks are merged and the fault is raised on every
rank at once, so no rank is left waiting in the next collective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from lightning_prune.collectors.base import BatchView

_MERGE = ("sum", "sum", "min", "max", "sum", "min", "max")
"""How each summary column merges over batches and ranks: non-finite rows, bad indices (count, lowest,
highest), bad targets (count, lowest, highest)."""


def _merge(rows: Tensor) -> Tensor:
    """Merge ``[k, 7]`` summaries column by column."""
    merged = [
        rows[:, column].sum() if how == "sum" else rows[:, column].min() if how == "min" else rows[:, column].max()
        for column, how in enumerate(_MERGE)
    ]
    return torch.stack(merged)


def nonfinite_message(owner: str, epoch: int) -> str:
    return (
        f"{owner}: the model produced NaN or inf logits in epoch {epoch}; scores computed from them would be "
        "meaningless. Lower the learning rate, check the inputs for NaN, or use gradient clipping."
    )


def check_first_batch(owner: str, view: BatchView, num_samples: int, num_classes: int, epoch: int) -> None:
    """The host-side check of an epoch's first batch."""
    logits, indices, targets = view.logits, view.indices, view.targets
    if logits.dim() != 2 or logits.shape[0] != indices.shape[0] or targets.shape[0] != indices.shape[0]:
        raise ValueError(
            f"{owner} expects logits of shape [batch, classes] matching {indices.shape[0]} indices and "
            f"{targets.shape[0]} targets; got logits of shape {tuple(logits.shape)}."
        )
    if not torch.isfinite(logits).all():
        raise FloatingPointError(nonfinite_message(owner, epoch))
    if logits.shape[1] != num_classes:
        raise ValueError(f"{owner} was collecting {num_classes} classes, this batch has {logits.shape[1]} logits.")
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= num_samples:
        raise IndexError(
            f"{owner}: sample index {high if high >= num_samples else low} is outside the training set "
            f"[0, {num_samples}). Indices must come from lightning_prune.IndexedDataset over the full training set "
            "(or pass num_samples=N)."
        )
    if int(targets.min()) < 0 or int(targets.max()) >= num_classes:
        raise ValueError(
            f"{owner}: targets must lie in [0, {num_classes}), got [{int(targets.min())}, {int(targets.max())}]."
        )


class BatchFaults:
    """The running fault summary of one epoch, on the device."""

    def __init__(self) -> None:
        self._summary: Tensor | None = None

    def screen(self, view: BatchView, num_samples: int, num_classes: int) -> Tensor:
        """Count this batch's faults, clamp ``view``'s indices and targets into range; return the valid rows."""
        indices, targets = view.indices, view.targets
        good_index = (indices >= 0) & (indices < num_samples)
        good_target = (targets >= 0) & (targets < num_classes)
        summary = torch.stack(
            [
                (~torch.isfinite(view.logits)).any(dim=1).sum(),
                (~good_index).sum(),
                indices.min(),
                indices.max(),
                (~good_target).sum(),
                targets.min(),
                targets.max(),
            ]
        ).to(torch.int64)
        self._summary = summary if self._summary is None else _merge(torch.stack([self._summary, summary]))
        view.indices = indices.clamp(0, max(num_samples - 1, 0))
        view.targets = targets.clamp(0, max(num_classes - 1, 0))
        return good_index & good_target

    def raise_if_any(
        self,
        owner: str,
        epoch: int,
        num_samples: int,
        num_classes: int,
        device: torch.device,
        gather: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        """Merge the ranks' summaries (``gather``: the strategy's ``all_gather`` under DDP) and raise the
        first fault found; the summary starts afresh either way."""
        summary, self._summary = self._summary, None
        if summary is None:  # a rank that saw no batch still takes part in the collective
            summary = torch.zeros(len(_MERGE), dtype=torch.int64, device=device)
        if gather is not None:
            summary = _merge(gather(summary).reshape(-1, len(_MERGE)))
        nonfinite, bad_indices, index_low, index_high, bad_targets, target_low, target_high = summary.tolist()
        if nonfinite:
            raise FloatingPointError(nonfinite_message(owner, epoch))
        if bad_indices:
            worst = index_high if index_high >= num_samples else index_low
            raise IndexError(
                f"{owner}: sample index {worst} is outside the training set [0, {num_samples}) ({bad_indices} rows in "
                f"epoch {epoch}). Indices must come from lightning_prune.IndexedDataset over the full training set "
                "(or pass num_samples=N)."
            )
        if bad_targets:
            raise ValueError(
                f"{owner}: targets must lie in [0, {num_classes}), got [{target_low}, {target_high}] ({bad_targets} "
                f"rows in epoch {epoch}). Check the dataset's labels, or the model's number of classes."
            )
