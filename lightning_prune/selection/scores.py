"""``Scores``: one importance value per training sample, higher = more important = keep."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_prune.selection.files import (
    ScoreFileError,
    build_manifest,
    integer_labels,
    label_fingerprint,
    read_npz,
    write_npz,
)


def check_same_dataset(
    what: str,
    *,
    num_samples: int,
    fingerprint: str | None,
    dataset_size: int,
    dataset_labels: np.ndarray | None = None,
) -> None:
    """Refuse a score/selection made for another data set (size or label fingerprint differ)."""
    if num_samples != dataset_size:
        raise ScoreFileError(
            f"{what} was made for a data set of {num_samples} samples, but this data set has "
            f"{dataset_size}. Score this data set again, or load the file made for it."
        )
    if fingerprint is not None and dataset_labels is not None:
        here = label_fingerprint(dataset_labels)
        if here != fingerprint:
            raise ScoreFileError(
                f"{what} was made for a data set with other labels (label fingerprint {fingerprint}, "
                f"this data set's is {here}): same size, different samples or order. Score this data "
                "set again, or load the file made for it."
            )


@dataclass
class Scores:
    """Per-sample importance scores of one method.

    Attributes:
        values: float array of length N, oriented so that higher = more important = keep.
        method: the method that produced them (``"tdds"``, ``"forgetting"``, ...).
        hparams: the method's hyper-parameters.
        labels: the training labels in index order, when known (class-balanced selection and the
            data-set fingerprint use them).
        extras: further per-sample arrays of length N a method exposes (e.g. AUM's accumulated margin).
    """

    values: np.ndarray
    method: str
    hparams: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"Scores.values must be a non-empty 1-D array, got shape {values.shape}.")
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise ValueError(
                f"{self.method} scores contain {bad} non-finite values (NaN or inf); a score must be a "
                "finite number for every sample. Check the training run that produced them."
            )
        self.values = values
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != values.shape:
                raise ValueError(f"labels have shape {labels.shape}, scores have {values.shape}: they must match.")
            self.labels = integer_labels(labels)
        for name, extra in list(self.extras.items()):
            extra = np.asarray(extra)
            if extra.shape[:1] != values.shape:
                raise ValueError(f"extra array {name!r} has {extra.shape[0]} rows, scores have {values.size}.")
            self.extras[name] = extra

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def num_samples(self) -> int:
        return len(self)

    @property
    def label_fingerprint(self) -> str | None:
        return label_fingerprint(self.labels)

    def check_dataset(self, dataset_size: int, dataset_labels: np.ndarray | None = None) -> None:
        """Raise :class:`ScoreFileError` if these scores were made for another data set."""
        check_same_dataset(
            f"These {self.method} scores",
            num_samples=len(self),
            fingerprint=self.label_fingerprint,
            dataset_size=dataset_size,
            dataset_labels=dataset_labels,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (``.npz``, with manifest), atomically. Returns the path written."""
        arrays = {"values": self.values}
        if self.labels is not None:
            arrays["labels"] = self.labels
        arrays.update({f"extra.{name}": array for name, array in self.extras.items()})
        manifest = build_manifest(
            "scores",
            method=self.method,
            hparams=self.hparams,
            num_samples=len(self),
            labels_fingerprint=self.label_fingerprint,
        )
        return write_npz(path, arrays, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Scores:
        """Read a file written by :meth:`save`; fails clearly on a truncated, foreign or altered file."""
        arrays, manifest = read_npz(path, "scores")
        if "values" not in arrays:
            raise ScoreFileError(f"{path}: the scores file has no 'values' array; regenerate it.")
        scores = cls(
            values=arrays["values"],
            method=manifest.get("method", "unknown"),
            hparams=manifest.get("hparams", {}),
            labels=arrays.get("labels"),
            extras={name[len("extra.") :]: array for name, array in arrays.items() if name.startswith("extra.")},
        )
        if manifest.get("num_samples") != len(scores):
            raise ScoreFileError(
                f"{path}: the manifest says {manifest.get('num_samples')} samples but the file holds "
                f"{len(scores)} scores; the file is corrupt, regenerate it."
            )
        if manifest.get("label_fingerprint") != scores.label_fingerprint:
            raise ScoreFileError(f"{path}: the labels do not match the manifest's fingerprint; the file is corrupt.")
        return scores
