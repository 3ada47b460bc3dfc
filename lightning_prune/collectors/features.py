"""Feature-space selectors: scores computed from the trained model's penultimate features.

Herding, Moderate-DS and prototypicality need one embedding per sample, not a trajectory. They
share :class:`FeatureCollector`, which records the inputs of the final ``nn.Linear`` (or
``feature_layer``) once, at the end of training, into an ``N x H`` buffer (float16 by default,
exchanged across DDP ranks through the base like any per-sample row), and computes the scores from
it when ``.scores`` is read (cached until the features change).

Where the features come from:

* ``source="eval_pass"`` (default): one no-grad, eval-mode pass over the training set with the
  final model, in ``on_train_end`` (also after early stopping). This is how the reference
  implementations embed the data (e.g. DeepCore: the trained model in eval mode). By default the
  pass reuses the train dataloader, training augmentation included; pass ``dataloader=`` an
  unshuffled loader with the test-time transform for clean embeddings. See
  :mod:`lightning_prune.collectors.eval_pass`.
* ``source="train"``: the training forward pass of the final epoch (``max_epochs - 1``) or of
  ``epoch=e``; free, but from a model that changes during the epoch, in train mode, on augmented
  inputs.

Memory: ``N * H * 2`` bytes in float16 (ImageNet-1k, N = 1,281,167: 1.31 GB at H=512 for a
ResNet-18, 5.25 GB at H=2048 for a ResNet-50), on the model's device. Under DDP the one exchange at
the end of training gathers every rank's rows, a transient of about the same size again. Scoring
works on one class (or, for global k-means, one chunk of rows) at a time in float32. Features beyond
float16's range (65504) are refused at scoring time: use ``precision="float32"`` then.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_prune.collectors.base import BatchView, ScoreCollector
from lightning_prune.collectors.eval_pass import EvalPassMixin

_PRECISIONS = {"float16": torch.float16, "float32": torch.float32}


def check_features(collector: Any, view: BatchView) -> Tensor:
    """The batch's ``[B, H]`` features, or a clear error if the hook captured none or the wrong shape."""
    name = type(collector).__name__
    features = view.features
    layer = repr(collector.feature_layer) if collector.feature_layer else "the model's last nn.Linear"
    if features is None:
        raise ValueError(
            f"{name} needs the inputs of the final linear layer, but none were captured for this batch: "
            f"{layer} was not called in this forward pass. Name the classifier layer with "
            "feature_layer='path.to.layer', or return BatchView(features=...) from an adapter."
        )
    if features.dim() != 2 or features.shape[0] != view.logits.shape[0]:
        raise ValueError(
            f"{name} expects features of shape [batch, hidden] matching the {view.logits.shape[0]} logits, got "
            f"{tuple(features.shape)} from {layer}. Use feature_layer= to name a layer applied once per sample, "
            "or pass an adapter that returns per-sample features."
        )
    return features


def median(values: Tensor, dim: int = 0) -> Tensor:
    """The median along ``dim``; for an even count the mean of the two middle values (as ``numpy.median``)."""
    count = values.shape[dim]
    ordered = values.sort(dim=dim).values
    upper = ordered.narrow(dim, count // 2, 1)
    if count % 2:
        return upper.squeeze(dim)
    lower = ordered.narrow(dim, count // 2 - 1, 1)
    return ((lower + upper) / 2).squeeze(dim)


def class_members(labels: Tensor) -> list[tuple[int, Tensor]]:
    """``(class, indices of its samples)`` for every class present, in class order."""
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    groups = torch.split(order, counts.tolist())
    return [(int(label), members) for label, members in zip(classes.tolist(), groups, strict=True)]


class FeatureCollector(EvalPassMixin, ScoreCollector):
    """Base of the selectors that score samples from their penultimate features.

    Args:
        source: ``"eval_pass"`` (default: one inference pass with the final model when training ends)
            or ``"train"`` (the training forward pass of the final epoch, or of ``epoch``).
        dataloader: for ``source="eval_pass"``, the loader to embed (default: the train dataloader).
        epoch: for ``source="train"``, the epoch whose forward pass is recorded (default ``max_epochs - 1``).
        precision: dtype of the stored features, ``"float16"`` (default) or ``"float32"``.
        **kwargs: see :class:`~lightning_prune.collectors.base.ScoreCollector`; ``feature_layer``
            names the layer whose inputs are the features.

    Subclasses implement :meth:`_score_features`.
    """

    needs_features = True
    _eval_schedule = "end"

    def __init__(
        self,
        *,
        source: str = "eval_pass",
        dataloader: DataLoader | None = None,
        epoch: int | None = None,
        precision: str = "float16",
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        self._set_source(source, dataloader)
        if epoch is not None:
            if source != "train":
                raise ValueError(
                    f"{name}: epoch= picks the training forward pass to read features from, so it needs "
                    "source='train'; the default eval pass always embeds with the final model."
                )
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise ValueError(f"{name} epoch must be an epoch number >= 0, got {epoch!r}.")
        if precision not in _PRECISIONS:
            raise ValueError(f"{name} precision must be one of {tuple(_PRECISIONS)}, got {precision!r}.")
        self.epoch = epoch
        self.precision = precision
        self._target_epoch: int | None = epoch
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ method interface
    def _method_hparams(self) -> dict[str, Any]:
        return {}

    def _score_features(self, features: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Scores (length N, higher = keep) and extras from the ``[N, H]`` features and the labels."""
        raise NotImplementedError

    # ------------------------------------------------------------------ ScoreCollector
    def hparams(self) -> dict[str, Any]:
        return {**self._method_hparams(), "source": self.source, "epoch": self.epoch, "precision": self.precision}

    def _reset(self) -> None:
        super()._reset()
        self._feature_dim: int | None = None
        self._cached: tuple[Tensor, dict[str, Tensor]] | None = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        features = (state_dict.get("buffers") or {}).get("features")
        if features is not None:  # the width is read from the first batch; a resumed fit reads it here
            self._feature_dim = int(features.shape[1])
        super().load_state_dict(state_dict)
        self._cached = None

    def _check_fit(self, trainer: pl.Trainer) -> None:
        if self.source != "train":
            return
        name = type(self).__name__
        max_epochs = trainer.max_epochs
        bounded = max_epochs if max_epochs is not None and max_epochs >= 0 else None  # None: no epoch limit
        if self.epoch is None:
            if bounded is None or bounded < 1:
                raise ValueError(
                    f"{name}(source='train') reads the features of the final epoch, which needs "
                    "Trainer(max_epochs=...); pass epoch=e to choose the epoch, or use the default source='eval_pass'."
                )
            self._target_epoch = bounded - 1
        elif bounded is not None and self.epoch >= bounded:
            raise ValueError(
                f"{name}(epoch={self.epoch}) reads epoch {self.epoch} (counted from 0), but the Trainer stops after "
                f"max_epochs={max_epochs}. Choose epoch < max_epochs."
            )

    def _describe_need(self) -> str:
        if self.source == "train":
            return f"the features of epoch {self._target_epoch}'s training forward pass"
        return "the features of one eval pass, which runs when training ends"

    def _collects(self, epoch: int) -> bool:
        return self.source == "eval_pass" or epoch == self._target_epoch

    def _allocate_state(self, trainer: pl.Trainer, view: BatchView) -> None:
        self._feature_dim = int(check_features(self, view).shape[1])
        super()._allocate_state(trainer, view)

    def _allocate(self, num_samples: int, num_classes: int, device: torch.device) -> dict[str, Tensor]:
        dtype = _PRECISIONS[self.precision]
        if self._feature_dim is None:
            raise RuntimeError(
                f"{type(self).__name__} does not know the feature width yet: it is read from the first batch's features."
            )
        return {"features": torch.zeros(num_samples, self._feature_dim, dtype=dtype, device=device)}

    def _collect(self, epoch: int, view: BatchView, fresh: Tensor) -> None:
        features = check_features(self, view)
        buffer = self._buffers["features"]
        if features.shape[1] != buffer.shape[1]:
            raise ValueError(
                f"{type(self).__name__} recorded features of width {buffer.shape[1]}, this batch has "
                f"{features.shape[1]}: the feature layer must be the same for every batch."
            )
        self._write(buffer, view.indices, features, fresh)

    def _epoch_rows(self, epoch: int) -> list[Tensor]:
        return [self._buffers["features"]]

    def _fold(self, epoch: int, seen: Tensor) -> None:
        self._cached = None

    def _compute(self) -> Tensor:
        if self._cached is None:
            features = self._buffers["features"]
            if not torch.isfinite(features).all():
                raise FloatingPointError(
                    f"{type(self).__name__}: some recorded features are NaN or inf"
                    + (
                        " (larger than float16's 65504); pass precision='float32'."
                        if self.precision == "float16"
                        else "; check the model."
                    )
                )
            self._cached = self._score_features(features, self._buffers["labels"])
        return self._cached[0]

    def _extras(self) -> dict[str, Tensor]:
        return dict(self._cached[1]) if self._cached is not None else {}
