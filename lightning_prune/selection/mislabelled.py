"""The training samples most likely mislabelled: a difficulty ranking read as a list of suspects.

A sample whose given label is wrong stays hard for the whole training: the model keeps assigning it
to its true class, so its margin stays low (AUM, Pleiss et al., NeurIPS 2020), its error norm high
(EL2N) and it is forgotten often. :func:`mislabelled` ranks the samples by the difficulty their
scores measure and lists the top ones with their given label and the label the training predicts
(``scores.extras["predicted_label"]``, kept by the collectors with ``records_predictions = True``:
AUM, EL2N, Forgetting, TDDS).

Measured on ``DigitsDataModule(label_noise=0.2)`` (1078 training samples, 216 flipped), a
``SmallCNN(width=16)`` trained 20 epochs with ``lr=0.05``, noise seeds 0 and 1: AUM's top 216
(k = the number of flips) holds 207 of them on both seeds (precision = recall = 0.958; margins on the
logits: 0.958 / 0.972), its top 10% (108) only flipped labels (precision 1.0, recall 0.5); EL2N
(first 5 epochs) 0.958 / 0.954; Forgetting 0.685 / 0.736 (its ties rank poorly). The samples the
trained model itself disagrees with are fewer (148 and 152: precision 0.97, recall 0.67): by the end
of training it has learned a third of the wrong labels, which the averaged margin still shows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightning_prune.collectors.state import PREDICTED_LABEL
from lightning_prune.selection.files import (
    FORMAT_VERSION,
    ScoreFileError,
    build_manifest,
    write_text_atomic,
)
from lightning_prune.selection.meaning import ScoreMeaning
from lightning_prune.selection.primitives import ACCUMULATED_MARGIN
from lightning_prune.selection.scores import Scores, check_same_dataset

KIND = "mislabelled"
DEFAULT_TOP = 0.1
"""How many samples :func:`mislabelled` lists by default: the likeliest 10% of the training set."""
COLUMNS = ("index", "given_label", "predicted_label", "score")


@dataclass(frozen=True)
class Mislabelled:
    """The samples most likely mislabelled, likeliest first.

    Attributes:
        indices: the samples' indices in the training set (int64).
        given_labels: their labels in the training set, the ones suspected wrong.
        predicted_labels: the class the training assigned each (the argmax of its logits in the last
            epoch the collector recorded): the likeliest true label where the two differ.
        scores: how likely each is mislabelled, higher = likelier: the scores' difficulty (``values``
            of difficulty scores, minus ``values`` of easiness scores).
        method: the method whose scores ranked them.
        num_samples: the size N of the training set.
        label_fingerprint: the fingerprint of the training set's labels, when known.
    """

    indices: np.ndarray
    given_labels: np.ndarray
    predicted_labels: np.ndarray
    scores: np.ndarray
    method: str
    num_samples: int
    label_fingerprint: str | None = None

    def __len__(self) -> int:
        return int(self.indices.size)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per sample, likeliest first: ``index``, ``given_label``, ``predicted_label``, ``score``."""
        return [
            {"index": int(i), "given_label": int(g), "predicted_label": int(p), "score": float(s)}
            for i, g, p, s in zip(self.indices, self.given_labels, self.predicted_labels, self.scores, strict=True)
        ]

    def check_dataset(self, dataset_size: int, dataset_labels: np.ndarray | None = None) -> None:
        """Raise :class:`~lightning_prune.ScoreFileError` if the list was made for another data set."""
        check_same_dataset(
            f"This list of {self.method}'s likely mislabelled samples",
            num_samples=self.num_samples,
            fingerprint=self.label_fingerprint,
            dataset_size=dataset_size,
            dataset_labels=dataset_labels,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the list as JSON (``{"manifest": ..., "samples": [rows]}``) to ``path``, atomically."""
        manifest = build_manifest(
            KIND,
            method=self.method,
            hparams={},
            num_samples=self.num_samples,
            labels_fingerprint=self.label_fingerprint,
            extra={"columns": list(COLUMNS), "listed": len(self)},
        )
        return write_text_atomic(path, json.dumps({"manifest": manifest, "samples": self.rows()}, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Mislabelled:
        """Read a file written by :meth:`save` (e.g. ``RUN_DIR/scores/aum.mislabelled.json``)."""
        source = Path(path)
        try:
            document = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ScoreFileError(f"{source}: no such file. Check the path, or write it with .save().") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ScoreFileError(f"{source}: unreadable or truncated ({type(error).__name__}: {error}).") from error
        manifest = document.get("manifest") if isinstance(document, dict) else None
        if not isinstance(manifest, dict) or manifest.get("format") != f"lightning-prune/{KIND}":
            raise ScoreFileError(
                f"{source}: not a list of likely mislabelled samples written by lightning-prune (no "
                f"'lightning-prune/{KIND}' manifest)."
            )
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise ScoreFileError(f"{source}: written by a newer lightning-prune; upgrade lightning-prune.")
        samples = document.get("samples")
        if not isinstance(samples, list) or len(samples) != manifest.get("listed"):
            raise ScoreFileError(f"{source}: the samples do not match the manifest's count; regenerate the file.")
        try:
            columns = {name: [row[name] for row in samples] for name in COLUMNS}
        except (KeyError, TypeError):
            raise ScoreFileError(f"{source}: a sample lacks one of {list(COLUMNS)}; regenerate the file.") from None
        return cls(
            indices=np.asarray(columns["index"], dtype=np.int64),
            given_labels=np.asarray(columns["given_label"], dtype=np.int64),
            predicted_labels=np.asarray(columns["predicted_label"], dtype=np.int64),
            scores=np.asarray(columns["score"], dtype=np.float64),
            method=str(manifest.get("method")),
            num_samples=int(manifest["num_samples"]),
            label_fingerprint=manifest.get("label_fingerprint"),
        )


def listable(scores: Scores) -> bool:
    """Whether :func:`mislabelled` can list from ``scores``: labels, predicted labels and a difficulty."""
    return scores.labels is not None and PREDICTED_LABEL in scores.extras and scores.meaning != ScoreMeaning.PREFERENCE


def mislabelled(scores: Scores, top: int | float = DEFAULT_TOP) -> Mislabelled:
    """The training samples most likely mislabelled: the hardest ones by ``scores``, likeliest first.

    Args:
        scores: scores of a collector that records predictions (:class:`~lightning_prune.AUM` ranks best,
            see :mod:`lightning_prune.selection.mislabelled` for the figures; also
            :class:`~lightning_prune.EL2N`, :class:`~lightning_prune.Forgetting`), from a run on the
            labels to check.
        top: how many to list: a count (``int`` >= 1) or a fraction of the training set in (0, 1]
            (default 0.1). With an estimate of the noise rate, list that fraction.

    Ties in the score are broken by index. The pipeline writes this list with its default ``top`` for
    every such method, as ``RUN_DIR/scores/METHOD.mislabelled.json`` (:meth:`Mislabelled.load`).

    Example::

        >>> import lightning.pytorch as pl
        >>> import lightning_prune as lp
        >>> aum = lp.AUM()
        >>> trainer = pl.Trainer(max_epochs=2, callbacks=[aum], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(lp.Classifier(lp.SmallCNN(width=8)), datamodule=lp.DigitsDataModule(label_noise=0.2))
        >>> suspects = lp.mislabelled(aum.scores, top=5)
        >>> sorted(suspects.rows()[0])
        ['given_label', 'index', 'predicted_label', 'score']
    """
    if scores.labels is None:
        raise ValueError(
            f"these {scores.method} scores carry no labels, so there is no given label to suspect. Use the scores a "
            "collector wrote (they carry the training labels), or build Scores(..., labels=...)."
        )
    if PREDICTED_LABEL not in scores.extras:
        raise ValueError(
            f"these {scores.method} scores do not record the label the training predicts "
            f"(scores.extras[{PREDICTED_LABEL!r}]). Score with a collector that does (lp.AUM ranks mislabelled "
            "samples best; lp.EL2N, lp.Forgetting), or a score file written since they record it."
        )
    if scores.meaning == ScoreMeaning.PREFERENCE:
        raise ValueError(
            f"these {scores.method} scores mean 'preference' (higher = keep, not harder): they do not say which "
            "labels are wrong. Use a difficulty score (lp.AUM, lp.EL2N, lp.Forgetting)."
        )
    count = _count(top, len(scores))
    likelihood = -scores.values if scores.meaning == ScoreMeaning.EASINESS else scores.values
    order = np.argsort(-likelihood, kind="stable")[:count]
    predicted = np.asarray(scores.extras[PREDICTED_LABEL]).astype(np.int64)
    return Mislabelled(
        indices=order.astype(np.int64),
        given_labels=scores.labels[order],
        predicted_labels=predicted[order],
        scores=likelihood[order],
        method=scores.method,
        num_samples=len(scores),
        label_fingerprint=scores.label_fingerprint,
    )


def label_noise_suspects(scores: Scores) -> np.ndarray | None:
    """Which training samples the scoring run itself contradicts the given label of (a boolean mask), or
    ``None`` where the scores cannot tell.

    With an accumulated margin (AUM's ``extras["accumulated_margin"]``): the negative ones, samples whose
    label the model ranked below another class on average over the training (Pleiss et al.'s signal of a
    wrong label). Else, with the predicted labels (``extras["predicted_label"]``, recorded by EL2N,
    Forgetting and TDDS): the samples the final epoch assigned to another class.
    """
    if ACCUMULATED_MARGIN in scores.extras:
        margins = np.asarray(scores.extras[ACCUMULATED_MARGIN], dtype=np.float64).reshape(len(scores))
        return margins < 0
    if PREDICTED_LABEL in scores.extras and scores.labels is not None:
        predicted = np.asarray(scores.extras[PREDICTED_LABEL]).astype(np.int64).reshape(len(scores))
        return predicted != np.asarray(scores.labels)
    return None


def label_noise_evidence(scores: Scores) -> float | None:
    """The share of the training set :func:`label_noise_suspects` suspects, or ``None`` where the scores
    cannot tell.

    A trained model memorises part of the wrong labels, so both signals read below the true noise rate:
    on ``DigitsDataModule(label_noise=0.2)`` (20 epochs) AUM's margin gives 0.19 and the predictions about
    0.14; on the clean digits both give 0.
    """
    suspects = label_noise_suspects(scores)
    return None if suspects is None else float(np.mean(suspects))


def _count(top: int | float, num_samples: int) -> int:
    if isinstance(top, bool) or not isinstance(top, int | float | np.integer | np.floating):
        raise TypeError(f"top={top!r} must be a count (int >= 1) or a fraction of the training set in (0, 1].")
    if isinstance(top, int | np.integer):
        if not 1 <= top <= num_samples:
            raise ValueError(f"top={top} must lie in [1, {num_samples}] (the training set's size) as a count.")
        return int(top)
    if not 0.0 < top <= 1.0:
        raise ValueError(
            f"top={top} must lie in (0, 1] as a fraction of the training set (or be a whole count, e.g. top=100)."
        )
    return max(1, int(round(float(top) * num_samples)))


__all__ = ["DEFAULT_TOP", "Mislabelled", "label_noise_evidence", "label_noise_suspects", "listable", "mislabelled"]
