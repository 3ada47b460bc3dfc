"""``Scores``: one importance value per training sample, higher = keep, with what higher means."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from lightning_prune.selection.files import (
    ScoreFileError,
    build_manifest,
    integer_labels,
    label_fingerprint,
    read_npz,
    write_npz,
)
from lightning_prune.selection.meaning import ScoreMeaning, check_meaning, registered_meaning


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
        extras: further per-sample arrays of length N a method exposes (e.g. AUM's accumulated margin);
            numeric ones must be finite, as the values.
        meaning: what higher values measure (:class:`~lightning_prune.selection.meaning.ScoreMeaning`):
            ``"difficulty"`` (higher = harder), ``"easiness"`` (higher = easier) or ``"preference"``
            (higher = keep in another sense, e.g. more representative). Collectors set it from their
            declared ``score_meaning``; ``auto``, ``easy``, CCS's hardness and ``dual`` read it. When not
            given: the meaning the library's collector named ``method`` declares (``Scores(v, "moderate")``
            means ``"preference"``), else ``"difficulty"`` (what every score meant before meanings were
            declared, and what most methods measure).
    """

    values: np.ndarray
    method: str
    hparams: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    # None (not given) is resolved in __post_init__, so the attribute is always a ScoreMeaning
    meaning: ScoreMeaning = cast(ScoreMeaning, None)

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
        self.meaning = (
            _default_meaning(self.method, self.hparams) if self.meaning is None else check_meaning(self.meaning)
        )
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != values.shape:
                raise ValueError(f"labels have shape {labels.shape}, scores have {values.shape}: they must match.")
            self.labels = integer_labels(labels)
        for name, extra in list(self.extras.items()):
            extra = np.asarray(extra)
            if extra.shape[:1] != values.shape:
                raise ValueError(f"extra array {name!r} has {extra.shape[0]} rows, scores have {values.size}.")
            if extra.dtype.kind in "fc" and not np.isfinite(extra).all():
                bad = int((~np.isfinite(extra)).sum())
                raise ValueError(
                    f"{self.method} scores' extras[{name!r}] contain {bad} non-finite values (NaN or inf); strategies "
                    "read them as they read the values (CCS the accumulated margin, DUAL the confidence), so every "
                    "entry must be finite. Check the training run that produced them."
                )
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
            extra={"meaning": self.meaning.value},
        )
        return write_npz(path, arrays, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike, meaning: ScoreMeaning | str | None = None) -> Scores:
        """Read a file written by :meth:`save`; fails clearly on a truncated, foreign or altered file.

        ``path`` may omit the ``.npz`` that :meth:`save` appends. The scores' meaning is the one the
        manifest records; a file written before meanings were recorded takes the meaning its method's
        collector declares (:data:`~lightning_prune.COLLECTORS`), and a file of another method needs
        ``meaning=`` (which also overrides a recorded one).
        """
        arrays, manifest = read_npz(path, "scores")
        if "values" not in arrays:
            raise ScoreFileError(f"{path}: the scores file has no 'values' array; regenerate it.")
        method, hparams = manifest.get("method", "unknown"), manifest.get("hparams", {})
        scores = cls(
            values=arrays["values"],
            method=method,
            hparams=hparams,
            labels=arrays.get("labels"),
            extras={name[len("extra.") :]: array for name, array in arrays.items() if name.startswith("extra.")},
            meaning=_file_meaning(path, manifest, method, hparams) if meaning is None else check_meaning(meaning),
        )
        if manifest.get("num_samples") != len(scores):
            raise ScoreFileError(
                f"{path}: the manifest says {manifest.get('num_samples')} samples but the file holds "
                f"{len(scores)} scores; the file is corrupt, regenerate it."
            )
        if manifest.get("label_fingerprint") != scores.label_fingerprint:
            raise ScoreFileError(f"{path}: the labels do not match the manifest's fingerprint; the file is corrupt.")
        return scores


def _file_meaning(
    path: str | os.PathLike, manifest: dict[str, Any], method: str, hparams: dict[str, Any]
) -> ScoreMeaning:
    """The meaning a scores file records, or (older files) its method's collector declares."""
    if "meaning" in manifest:
        try:
            return check_meaning(manifest["meaning"])
        except ValueError as error:
            raise ScoreFileError(
                f"{path}: {error} The file is damaged or from another library; regenerate it."
            ) from None
    try:
        declared = registered_meaning(method, hparams)
    except ValueError as error:
        raise ScoreFileError(f"{path}: {error} Pass Scores.load(path, meaning=...).") from None
    if declared is None:
        raise ScoreFileError(
            f"{path}: the file does not record what its {method!r} scores mean (it predates recorded meanings), and "
            f"{method!r} is not a collector of the library, whose declared meaning would be used. Say it: "
            "Scores.load(path, meaning='difficulty') for higher = harder (what select() assumed before), "
            "'easiness' for higher = easier, or 'preference' for higher = keep in another sense; save it again "
            "to record it."
        )
    return declared


def _default_meaning(method: str, hparams: dict[str, Any]) -> ScoreMeaning:
    """The meaning of scores built without one: their method's declared one, else difficulty."""
    try:
        declared = registered_meaning(method, hparams)
    except ValueError as error:
        raise ValueError(f"{error} Pass Scores(..., meaning=...) to say what these scores mean.") from None
    return ScoreMeaning.DIFFICULTY if declared is None else declared
