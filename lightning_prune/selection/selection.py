"""``Selection``: the kept subset of a training set, with optional per-sample weights."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_prune.selection.files import ScoreFileError, build_manifest, read_npz, write_npz
from lightning_prune.selection.scores import check_same_dataset


@dataclass
class Selection:
    """The samples a pruning method keeps.

    Attributes:
        indices: sorted, unique indices (into the full training set) of the kept samples.
        num_samples: size N of the full training set the indices refer to.
        weights: optional per-sample training weights, aligned with ``indices``.
        method: the method (and strategy) that produced the selection.
        hparams: its hyper-parameters (pruning ratio, strategy, seed, ...).
        label_fingerprint: fingerprint of the full training set's labels, when known.
    """

    indices: np.ndarray
    num_samples: int
    weights: np.ndarray | None = None
    method: str = "unknown"
    hparams: dict[str, Any] = field(default_factory=dict)
    label_fingerprint: str | None = None

    def __post_init__(self) -> None:
        indices = np.asarray(self.indices)
        if indices.ndim != 1:
            raise ValueError(f"Selection.indices must be 1-D, got shape {indices.shape}.")
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"Selection.indices must be integers, got {indices.dtype}.")
        indices = indices.astype(np.int64)
        self.num_samples = int(self.num_samples)
        if self.num_samples < 1:
            raise ValueError(
                f"Selection num_samples={self.num_samples}: the data set the indices refer to must have a positive "
                "number of samples (pass len(train_set))."
            )
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_samples):
            raise ValueError(
                f"Selection indices must lie in [0, {self.num_samples}); got [{indices.min()}, {indices.max()}]."
            )
        order = np.argsort(indices, kind="stable")
        indices = indices[order]
        if indices.size > 1 and (np.diff(indices) == 0).any():
            raise ValueError("Selection indices must be unique; a sample was selected twice.")
        self.indices = indices
        if self.weights is not None:
            weights = np.asarray(self.weights, dtype=np.float32)
            if weights.shape != order.shape:
                raise ValueError(f"{weights.size} weights for {indices.size} selected samples: they must match.")
            if not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError("Selection weights must be finite and non-negative.")
            self.weights = weights[order]

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def keep_ratio(self) -> float:
        return len(self) / self.num_samples

    @property
    def prune_ratio(self) -> float:
        return 1.0 - self.keep_ratio

    def mask(self) -> np.ndarray:
        """Boolean keep-mask of length N."""
        keep = np.zeros(self.num_samples, dtype=bool)
        keep[self.indices] = True
        return keep

    def check_dataset(self, dataset_size: int, dataset_labels: np.ndarray | None = None) -> None:
        """Raise :class:`ScoreFileError` if this selection was made for another data set."""
        check_same_dataset(
            f"This {self.method} selection",
            num_samples=self.num_samples,
            fingerprint=self.label_fingerprint,
            dataset_size=dataset_size,
            dataset_labels=dataset_labels,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (``.npz``, with manifest), atomically. Returns the path written."""
        arrays = {"indices": self.indices}
        if self.weights is not None:
            arrays["weights"] = self.weights
        manifest = build_manifest(
            "selection",
            method=self.method,
            hparams=self.hparams,
            num_samples=self.num_samples,
            labels_fingerprint=self.label_fingerprint,
            extra={"num_kept": len(self), "prune_ratio": self.prune_ratio},
        )
        return write_npz(path, arrays, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Selection:
        """Read a file written by :meth:`save`; fails clearly on a truncated or foreign file."""
        arrays, manifest = read_npz(path, "selection")
        if "indices" not in arrays:
            raise ScoreFileError(f"{path}: the selection file has no 'indices' array; regenerate it.")
        selection = cls(
            indices=arrays["indices"],
            num_samples=manifest["num_samples"],
            weights=arrays.get("weights"),
            method=manifest.get("method", "unknown"),
            hparams=manifest.get("hparams", {}),
            label_fingerprint=manifest.get("label_fingerprint"),
        )
        if manifest.get("num_kept", len(selection)) != len(selection):
            raise ScoreFileError(
                f"{path}: the manifest's sample count does not match the indices; the file is corrupt."
            )
        return selection
