"""GraNd: the gradient norm (Paul et al., "Deep Learning on a Data Diet", NeurIPS 2021), last layer.

The paper's GraNd is the norm of the per-sample gradient of the cross-entropy over all parameters.
The cheap and common form (also DeepCore's) restricts it to the final linear layer, where it has a
closed form: for logits ``z = W h + b``, ``dCE/dW = (p - y) h^T`` and ``dCE/db = p - y``, so

    ``GraNd(i) = || p_i - onehot(y_i) ||_2 * sqrt(||h_i||^2 + 1)``   (``sqrt(||h_i||^2)`` without a bias)

from the penultimate features ``h_i``: no per-sample backward pass. The features are the inputs
of the model's final ``nn.Linear`` (the last one in ``pl_module.modules()`` order), captured by a
forward hook during the training forward pass; name another layer with ``feature_layer="path"``,
or return ``BatchView(features=...)`` from an adapter. Whether the bias term counts is read from
that layer. Averaged over a range of early epochs like EL2N; higher = larger gradient = keep.

The formula holds for logits that are that layer's output: ``training_step`` must return the raw
logits, not a softmax or anything else applied after the layer (checked on the first batch of a fit).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.averaged import EpochAverageCollector, Epochs, error_norm
from lightning_prune.collectors.base import BatchView, _find_final_linear, default_adapter
from lightning_prune.collectors.features import check_features
from lightning_prune.selection.meaning import ScoreMeaning


class GraNd(EpochAverageCollector):
    """Mean last-layer gradient norm over an epoch range; higher = keep.

    Args:
        epochs: the epochs averaged: ``n`` for epochs ``0..n-1`` (default 10), or ``(start, stop)``.
            The paper scores at initialisation (averaged over seeds); ``epochs=1`` is the closest a
            single run gets.
        feature_layer: name of the final linear layer whose inputs are the features ``h`` (default:
            the model's last ``nn.Linear``).
        **kwargs: see :class:`~lightning_prune.collectors.base.ScoreCollector`.

    State: two float32 values per sample.
    """

    method = "grand"
    score_meaning = ScoreMeaning.DIFFICULTY
    needs_features = True

    def __init__(self, epochs: Epochs = 10, **kwargs: Any) -> None:
        super().__init__(epochs, **kwargs)
        self._bias_term = 1.0
        self._layer: torch.nn.Linear | None = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        layer = _find_final_linear(pl_module, self.feature_layer)
        self._bias_term = 1.0 if getattr(layer, "bias", None) is not None else 0.0
        # the closed form holds for logits = W h + b: check it on the fit's first batch (a sync allowed there)
        self._layer = layer if self.adapter is default_adapter else None

    def _check_logits_are_the_layers(self, view: BatchView, features: Tensor) -> None:
        layer, self._layer = self._layer, None
        if layer is None:
            return
        with torch.no_grad():
            bias = None if layer.bias is None else layer.bias.float()
            expected = torch.nn.functional.linear(features.float(), layer.weight.float(), bias)
        logits = view.logits.float()
        # loose enough for bf16/fp16 autocast logits, far tighter than softmax or relu changes them
        if logits.shape != expected.shape or (logits - expected).abs().max() > 0.05 * expected.abs().max() + 1e-4:
            where = repr(self.feature_layer) if self.feature_layer else "(the model's last nn.Linear)"
            raise ValueError(
                f"GraNd: the logits are not the output of the final linear layer {where} (training_step returns "
                "something computed after "
                "it, e.g. softmax or relu); the gradient-norm formula needs logits = W h + b of that layer. Return the "
                "raw logits as 'logits', or name the layer that produces them with feature_layer='...'."
            )

    @override
    def batch_values(self, view: BatchView) -> dict[str, Tensor]:
        features = check_features(self, view)
        self._check_logits_are_the_layers(view, features)
        feature_norm_sq = features.float().pow(2).flatten(1).sum(dim=1)
        return {"total": error_norm(view) * torch.sqrt(feature_norm_sq + self._bias_term)}
