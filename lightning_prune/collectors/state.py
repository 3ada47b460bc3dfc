"""The public collector contract: declare per-sample state, write the formula; the base does the rest.

A collector states *what* it keeps per sample (:class:`PerSample`: dtype, trailing shape, and how
each epoch's values merge into it) and *how* a batch turns into values
(:meth:`~lightning_prune.ScoreCollector.batch_values`) and state into scores
(:meth:`~lightning_prune.ScoreCollector.score`). The base class allocates the tensors on the
model's device, writes each batch's rows without a host synchronisation (first presentation of a
sample in an epoch wins), exchanges the epoch's rows across DDP ranks, merges them into the state
when the epoch ends, and checkpoints all of it.

An epoch's values merge by ``reduce``:

* ``"sum"``: added to the running total (divide by ``state["times_seen"]`` for a mean);
* ``"last"``: replaced by the latest epoch's value (a sample missing from an epoch keeps its old one);
* ``"max"`` / ``"min"``: the running extreme;
* ``None``: not written from batches; only :meth:`~lightning_prune.ScoreCollector.fold` changes it
  (state carried from epoch to epoch, e.g. the previous epoch's correctness for forgetting events).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

REDUCTIONS = ("sum", "last", "max", "min")
CLASSES = "classes"
"""In a :class:`PerSample` shape, the number of classes C (known from the first batch's logits)."""
FEATURES = "features"
"""In a :class:`PerSample` shape, the feature width H (known from the first batch's ``BatchView.features``)."""
SIZES = (CLASSES, FEATURES)
PREDICTED_LABEL = "predicted_label"
"""The state (and ``Scores.extras`` entry) of each sample's predicted class, kept by collectors with
``records_predictions = True``: the argmax of its logits in the last epoch collected."""
EPOCH_SUFFIX = "@epoch"
"""Buffer-name suffix of the rows a reduced state's values are written to during an epoch."""


@dataclass(frozen=True)
class PerSample:
    """One per-sample tensor of a collector: ``N`` rows of ``shape``.

    Args:
        reduce: how each epoch's values merge into the state (``"sum"``, ``"last"``, ``"max"``,
            ``"min"``), or ``None`` for state that only :meth:`~lightning_prune.ScoreCollector.fold` writes.
        dtype: the tensor's dtype (``torch.float16`` halves the memory where the precision is enough).
        shape: trailing dimensions per sample; the string ``"classes"`` stands for C and ``"features"``
            for the width H of the batch's features (``BatchView.features``).
        fill: the initial value of every element.
    """

    reduce: str | None = "sum"
    dtype: torch.dtype = torch.float32
    shape: tuple[int | str, ...] = ()
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.reduce is not None and self.reduce not in REDUCTIONS:
            raise ValueError(f"PerSample reduce={self.reduce!r} is not one of {REDUCTIONS} or None.")
        for size in self.shape:
            if size not in SIZES and not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
                raise ValueError(
                    f"PerSample shape {self.shape}: each size is a positive int, {CLASSES!r} or {FEATURES!r}."
                )

    @property
    def uses_features(self) -> bool:
        """Whether the shape has the feature width H, read from the first batch's features."""
        return FEATURES in self.shape

    def sizes(self, num_samples: int, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The tensor's full size, with ``dims`` giving the symbolic sizes (``{"classes": C, "features": H}``)."""
        return (num_samples, *(dims[size] if isinstance(size, str) else int(size) for size in self.shape))

    def allocate(self, num_samples: int, dims: Mapping[str, int], device: torch.device) -> Tensor:
        return torch.full(self.sizes(num_samples, dims), self.fill, dtype=self.dtype, device=device)


def allocate_declared(
    spec: Mapping[str, PerSample], num_samples: int, dims: Mapping[str, int], device: torch.device
) -> dict[str, Tensor]:
    """The declared states, plus an epoch-row buffer for each reduced one that needs its own."""
    buffers: dict[str, Tensor] = {}
    for name, declared in spec.items():
        if EPOCH_SUFFIX in name or name in ("labels", "seen", "times_seen"):
            raise ValueError(f"Collector state name {name!r} is reserved; choose another name.")
        buffers[name] = declared.allocate(num_samples, dims, device)
        if declared.reduce not in (None, "last"):  # "last" writes its rows in place
            buffers[name + EPOCH_SUFFIX] = torch.zeros_like(buffers[name])
    return buffers


def epoch_row(spec: Mapping[str, PerSample], buffers: Mapping[str, Tensor], name: str) -> Tensor:
    """The tensor an epoch's values of ``name`` are written to."""
    return buffers[name] if spec[name].reduce == "last" else buffers[name + EPOCH_SUFFIX]


def merge_epoch(spec: Mapping[str, PerSample], buffers: Mapping[str, Tensor], seen: Tensor, first_time: Tensor) -> None:
    """Merge the finished epoch's rows of the samples ``seen`` into each reduced state, in place.

    ``first_time`` marks samples seen for the first time, whose extreme is their first value.
    """
    for name, declared in spec.items():
        if declared.reduce in (None, "last"):
            continue
        state, row = buffers[name], buffers[name + EPOCH_SUFFIX]
        mask = seen.reshape(-1, *([1] * (state.dim() - 1)))
        if declared.reduce == "sum":
            merged = state + row
        elif declared.reduce == "max":
            merged = torch.where(first_time.reshape(mask.shape), row, torch.maximum(state, row))
        else:
            merged = torch.where(first_time.reshape(mask.shape), row, torch.minimum(state, row))
        state.copy_(torch.where(mask, merged, state))
