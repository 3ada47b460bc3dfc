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

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_prune.collectors.arguments import is_integer
from lightning_prune.collectors.base import BatchView, EpochNeed, ScoreCollector
from lightning_prune.collectors.eval_pass import EvalPassMixin
from lightning_prune.collectors.state import FEATURES, PerSample

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

    Subclasses implement :meth:`score_features`.
    """

    needs_features = True
    eval_schedule = "end"

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
            if not is_integer(epoch) or epoch < 0:
                raise ValueError(f"{name} epoch must be an epoch number >= 0, got {epoch!r}.")
            epoch = int(epoch)
        if precision not in _PRECISIONS:
            raise ValueError(f"{name} precision must be one of {tuple(_PRECISIONS)}, got {precision!r}.")
        self.epoch = epoch
        self.precision = precision
        self._target_epoch: int | None = epoch
        self._cached: tuple[Tensor, dict[str, Tensor]] | None = None
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ method interface
    def score_features(self, features: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The method: scores (length N, higher = keep) and extras (``Scores.extras``) from the ``[N, H]``
        features (as stored, e.g. float16) and the ``[N]`` labels. Called once per change of the features."""
        raise NotImplementedError(f"{type(self).__name__} does not implement score_features(features, labels).")

    # ------------------------------------------------------------------ ScoreCollector
    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._cached = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.source == "train" and self.epoch is None:
            max_epochs = trainer.max_epochs
            if max_epochs is None or max_epochs < 1:  # -1: no epoch limit
                raise ValueError(
                    f"{type(self).__name__}(source='train') reads the features of the final epoch, which needs "
                    "Trainer(max_epochs=...); pass epoch=e to choose the epoch, or use the default source='eval_pass'."
                )
            self._target_epoch = max_epochs - 1
        super().on_fit_start(trainer, pl_module)

    @override
    def needs(self) -> EpochNeed:
        if self.source != "train":
            return EpochNeed(
                "source='eval_pass'", 1, describe="the features of one eval pass, which runs when training ends"
            )
        target = self._target_epoch if self._target_epoch is not None else 0
        describe = f"the features of epoch {target}'s training forward pass"
        if self.epoch is None:
            return EpochNeed("source='train'", target + 1, describe=describe, what=f"reads the final epoch, {target},")
        return EpochNeed(
            f"epoch={self.epoch}", self.epoch + 1, describe=describe, what=f"reads epoch {self.epoch} (counted from 0)"
        )

    @override
    def collects(self, epoch: int) -> bool:
        return self.source == "eval_pass" or epoch == self._target_epoch

    @override
    def state_spec(self) -> dict[str, PerSample]:
        return {"features": PerSample(reduce="last", dtype=_PRECISIONS[self.precision], shape=(FEATURES,))}

    @override
    def batch_values(self, view: BatchView) -> dict[str, Tensor]:
        features = check_features(self, view)
        width = self.state["features"].shape[1]
        if features.shape[1] != width:
            raise ValueError(
                f"{type(self).__name__} recorded features of width {width}, this batch has "
                f"{features.shape[1]}: the feature layer must be the same for every batch."
            )
        return {"features": features}

    @override
    def fold(self, epoch: int, values: Mapping[str, Tensor], state: dict[str, Tensor], seen: Tensor) -> None:
        self._cached = None

    def _scored(self, state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self._cached is None:
            features = state["features"]
            if not torch.isfinite(features).all():
                raise FloatingPointError(
                    f"{type(self).__name__}: some recorded features are NaN or inf"
                    + (
                        " (larger than float16's 65504); pass precision='float32'."
                        if self.precision == "float16"
                        else "; check the model."
                    )
                )
            self._cached = self.score_features(features, state["labels"])
        return self._cached

    @override
    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        return self._scored(state)[0]

    @override
    def extras(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return dict(self._scored(state)[1])
