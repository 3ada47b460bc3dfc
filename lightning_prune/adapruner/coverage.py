"""What the training batches showed AdaPruner: which sample indices, and with which labels.

The mask has one entry per index in ``[0, num_samples)`` and starts at 1 (kept), so an index that
never appears in a batch stays kept without ever being judged. A ``num_samples`` larger than the
data, a sampler that leaves samples out or partial epochs would so select samples nobody trained
on. :class:`SeenIndices` records the indices on the device (one scatter per batch, no host sync)
until every index has appeared, merges ranks at epoch end and refuses a full epoch that left
indices out; ``selection()`` asks it again. :class:`SeenLabels` keeps each index's integer target
for the selection's data-set fingerprint.

Neither is a registered buffer: each rank records the samples it was dealt, and DDP's per-step
buffer broadcast would overwrite that with rank 0's record. Ranks merge at the end of each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

AllGather = Callable[[Tensor], Any]
"""``LightningModule.all_gather``: stacks a tensor from every rank (``[world, ...]``)."""


class SeenIndices:
    """Which of the indices ``[0, num_samples)`` have appeared in a training batch.

    Three states: *unknown* (no fit in this process and no record in a loaded checkpoint, e.g. a
    module given trained weights by ``load_state_dict``: nothing to check), *recording* (a bool
    tensor), *complete* (every index seen; recording stops, so later epochs pay nothing).
    """

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples
        self.complete = False
        self.seen: Tensor | None = None
        self._from_start = False  # this epoch's batch 0 ran in this process (not a mid-epoch resume)
        self._batches = 0

    def start_fit(self, device: torch.device) -> None:
        # Lightning skips on_train_epoch_start when it resumes mid-epoch: without this reset, counts
        # left by an earlier fit of this module would pass the resumed part-epoch off as a full one.
        self.start_epoch()
        if self.complete:
            return
        if self.seen is None:
            self.seen = torch.zeros(self.num_samples, dtype=torch.bool, device=device)
        else:
            self.seen = self.seen.to(device)

    def start_epoch(self) -> None:
        self._from_start, self._batches = False, 0

    def record(self, indices: Tensor, batch_idx: int) -> None:
        if self.seen is None:
            return
        self._from_start |= batch_idx == 0
        self._batches += 1
        if self.seen.device != indices.device:
            self.seen = self.seen.to(indices.device)
        self.seen[indices] = True

    def end_epoch(self, trainer: pl.Trainer, all_gather: AllGather) -> None:
        """Merge the ranks' records; at the end of a full epoch, refuse indices no batch held.

        Every rank merges the same records and so takes the same decision: all raise together,
        none is left waiting in a collective.
        """
        if self.seen is None:
            return
        if trainer.world_size > 1:
            gathered = all_gather(self.seen.to(torch.uint8))  # uint8: not every backend gathers bool
            if isinstance(gathered, Tensor) and gathered.dim() == 2:
                self.seen = gathered.amax(dim=0).bool().to(self.seen.device)
        unseen = self.unseen()
        if unseen.size == 0:
            self.complete, self.seen = True, None
            return
        # A mid-epoch resume ran only part of this epoch here (the rest is in the checkpoint's
        # record, or lost with a loader that cannot resume): wait for a full epoch. fast_dev_run
        # is a smoke test; selection() still refuses its mask.
        if not self._from_start or getattr(trainer, "fast_dev_run", False):
            return
        epoch = trainer.current_epoch
        cut = _cut_short(trainer, self._batches)
        if cut is not None:
            raise ValueError(self._describe(unseen, f"training epoch {epoch}, which {cut}") + _PARTIAL_FIX)
        if unseen.size <= _drop_last_allowance(trainer):
            return  # drop_last: shuffled, the dropped samples appear in later epochs
        raise ValueError(self._describe(unseen, f"training epoch {epoch}") + _FIX)

    def unseen(self) -> np.ndarray:
        """The indices not seen yet (empty when complete or unknown)."""
        if self.seen is None:
            return np.zeros(0, dtype=np.int64)
        return torch.nonzero(~self.seen).reshape(-1).cpu().numpy()

    def check_selectable(self) -> None:
        """Refuse a selection that would include indices no training batch held."""
        message = self.never_seen_message()
        if message is not None:
            raise RuntimeError(f"AdaPruner.selection(): {message}")

    def never_seen_message(self) -> str | None:
        unseen = self.unseen()
        if unseen.size == 0:
            return None
        n = self.num_samples
        return (
            f"{unseen.size} of the {n} indices in [0, {n}) never appeared in a training batch "
            f"({describe_indices(unseen)}), so their mask entries never trained and would keep those samples "
            "unjudged. Pass num_samples=len(train_set), train on full epochs, and shuffle the training data if "
            "the loader drops its last batch (drop_last=True)."
        )

    def _describe(self, unseen: np.ndarray, when: str) -> str:
        n = self.num_samples
        return (
            f"AdaPruner(num_samples={n}), but only {n - unseen.size} of the {n} indices in [0, {n}) appeared in a "
            f"training batch by the end of {when} (never seen: {describe_indices(unseen)}). The mask has one "
            "entry per sample and keeps every sample it never sees. "
        )

    def state_dict(self) -> dict[str, Any]:
        seen = self.seen.detach().cpu().clone() if self.seen is not None else None
        return {"all_indices_seen": self.complete, "seen_indices": seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Checkpoints written before indices were recorded hold neither key: unknown, nothing to check.
        self.complete = bool(state.get("all_indices_seen", False))
        seen = state.get("seen_indices")
        self.seen = None if self.complete or seen is None else seen.clone()


_FIX = "Pass num_samples=len(train_set), and a sampler that yields every sample in every epoch."
_PARTIAL_FIX = (
    "AdaPruner learns every sample's mask entry from every epoch: train on full epochs (no "
    "limit_train_batches, and max_steps, if set, of at least one epoch)."
)


def _cut_short(trainer: pl.Trainer, batches: int) -> str | None:
    """How the epoch that just ended stopped before the loader's end, or ``None`` if it did not."""
    limit, max_steps = trainer.limit_train_batches, trainer.max_steps
    length = _loader_batches(trainer.train_dataloader)
    setting = None
    if (isinstance(limit, float) and limit < 1.0) or (isinstance(limit, int) and (length is None or limit < length)):
        setting = f"limit_train_batches={limit!r}"
    elif max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps:
        setting = f"max_steps={max_steps}"
    if length is not None:
        if batches >= length:
            return None
        return f"ran {batches} of the loader's {length} batches" + (f" ({setting})" if setting else "")
    return None if setting is None else f"stopped after {batches} batches ({setting})"


def _loader_batches(loader: Any) -> int | None:
    try:
        length = len(loader)
    except TypeError:  # an iterable dataset without a length, or several loaders
        return None
    return length if math.isfinite(length) else None


def _drop_last_allowance(trainer: pl.Trainer) -> int:
    """How many samples ``drop_last`` may have left out of one epoch (0 without ``drop_last``)."""
    loader = trainer.train_dataloader
    batch_sampler = getattr(loader, "batch_sampler", None)
    drop_last = getattr(batch_sampler, "drop_last", getattr(loader, "drop_last", False))
    batch_size = getattr(batch_sampler, "batch_size", None) or getattr(loader, "batch_size", None)
    if not drop_last or not isinstance(batch_size, int):
        return 0
    return trainer.world_size * (batch_size - 1)


def describe_indices(indices: np.ndarray, shown: int = 5) -> str:
    """``"64..127"`` for a run of consecutive indices, else the first few and the count."""
    if indices.size and int(indices[-1]) - int(indices[0]) + 1 == indices.size:
        return str(indices[0]) if indices.size == 1 else f"{indices[0]}..{indices[-1]}"
    head = ", ".join(str(i) for i in indices[:shown])
    return head + (f", ... ({indices.size} in all)" if indices.size > shown else "")


class SeenLabels:
    """The integer target each index was seen with, for the selection's label fingerprint.

    Recording stops for good (and the record is cleared) at the first batch whose targets are not
    class labels (regression, multi-label, ...): such a task has no label fingerprint.
    """

    def __init__(self, num_samples: int) -> None:
        self.labels = torch.full((num_samples,), -1, dtype=torch.long)
        self.recording = True

    def to(self, device: torch.device) -> None:
        self.labels = self.labels.to(device)

    def record(self, targets: Any, indices: Tensor) -> None:
        if (
            not isinstance(targets, Tensor)
            or targets.is_floating_point()
            or targets.is_complex()
            or targets.dim() != 1
            or targets.shape[0] != indices.shape[0]
        ):
            self.recording = False
            self.labels.fill_(-1)
            return
        if self.labels.device != indices.device:
            self.labels = self.labels.to(indices.device)
        self.labels[indices] = targets.to(self.labels.device, torch.long)

    def merge(self, trainer: pl.Trainer, all_gather: AllGather) -> None:
        if trainer.world_size > 1:
            gathered = all_gather(self.labels)
            if isinstance(gathered, Tensor) and gathered.dim() == 2:
                self.labels = gathered.max(dim=0).values.to(self.labels.device)

    def as_array(self) -> np.ndarray | None:
        """The labels in index order once every index was seen with one, else ``None``."""
        seen = self.labels.detach().cpu().numpy()
        if seen.size == 0 or (seen < 0).any():
            return None
        return seen
