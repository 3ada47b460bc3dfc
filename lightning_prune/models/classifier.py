"""``Classifier``: the reference ``LightningModule`` for training any backbone, weighted or not."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_prune.data.indexed import batch_weights, carried_weights, split_batch, unpack_batch
from lightning_prune.models.layers import find_last_linear
from lightning_prune.models.schedules import cosine_schedule

__all__ = ["Classifier", "batch_weights"]  # batch_weights: re-exported from its old home

SCHEDULERS = ("cosine", "none")
WEIGHTED_LOSSES = ("normalized", "mean")


class Classifier(pl.LightningModule):
    """Image classification with any backbone, as the pruning papers train it.

    Training batches are ``(x, y, index)`` or ``(x, y, index, weight)`` (or dicts, see
    :func:`~lightning_prune.unpack_batch`); ``training_step`` returns ``{"loss", "logits"}`` so the
    score collectors can read the logits. Validation/test batches may be ``(x, y)`` or carry more.

    Per-sample weights, when the batch has them, give the loss
    ``sum_i w_i * CE_i / sum_i w_i`` (``weighted_loss="normalized"``, a weighted mean; a batch whose
    weights are all zero contributes no gradient) or ``mean_i(w_i * CE_i)`` (``"mean"``, which also
    scales each batch's loss by its mean weight, so batches of low-weight samples take smaller steps).

    Under :class:`~lightning_prune.InfoBatch` use ``weighted_loss="mean"``: ``"normalized"`` divides
    InfoBatch's rescaling back out, which InfoBatch detects (as for any model) and refuses.

    Optimiser: SGD with ``momentum`` and ``weight_decay``; ``scheduler="cosine"`` anneals the
    learning rate to 0 over the whole run, stepped per optimiser step
    (:func:`~lightning_prune.models.schedules.cosine_schedule`, which any model's
    ``configure_optimizers`` can return too: step-counted, or following the fraction of training
    done under a callback that changes the number of batches per epoch). Logs ``train_loss``, ``val_loss``/``val_acc`` and
    ``test_loss``/``test_acc``.

    Args:
        backbone: any ``nn.Module`` mapping inputs to logits.
        num_classes: number of classes; inferred from the backbone's last ``nn.Linear`` if omitted.
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        scheduler: ``"cosine"`` or ``"none"`` (constant learning rate).
        weighted_loss: how per-sample weights combine, ``"normalized"`` or ``"mean"`` (see above).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        scheduler: str = "cosine",
        weighted_loss: str = "normalized",
    ) -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler={scheduler!r} is not one of {list(SCHEDULERS)}.")
        if weighted_loss not in WEIGHTED_LOSSES:
            raise ValueError(f"weighted_loss={weighted_loss!r} is not one of {list(WEIGHTED_LOSSES)}.")
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"Need lr > 0, momentum >= 0, weight_decay >= 0; got {lr}, {momentum}, {weight_decay}.")
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.num_classes = (
            int(num_classes)
            if num_classes is not None
            else find_last_linear(
                backbone, purpose="Classifier (to infer the number of classes; else pass num_classes=...)"
            )[1].out_features
        )
        self.val_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, y, _ = unpack_batch(batch)
        logits = self(x)
        per_sample = F.cross_entropy(logits, y, reduction="none")
        if carried_weights(batch) is None:
            loss = per_sample.mean()
        else:
            weights = batch_weights(batch).to(per_sample.dtype)
            if self.hparams["weighted_loss"] == "normalized":
                loss = (weights * per_sample).sum() / weights.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)
            else:
                loss = (weights * per_sample).mean()
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=y.numel(), sync_dist=True)
        return {"loss": loss, "logits": logits}

    def _evaluate(self, batch: Any, stage: str, metric: MulticlassAccuracy) -> Tensor:
        x, y, _ = split_batch(batch, need_indices=False)
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metric.update(logits, y)
        self.log(f"{stage}_loss", loss, on_epoch=True, batch_size=y.numel(), sync_dist=True)
        self.log(f"{stage}_acc", metric, on_epoch=True, batch_size=y.numel())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(split_batch(batch, need_indices=False, need_targets=False)[0])

    def configure_optimizers(self) -> Any:
        hp = self.hparams  # an AttributeDict, typed as a MutableMapping: read it by key
        optimizer = torch.optim.SGD(
            self.parameters(), lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
        if hp["scheduler"] == "none":
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": cosine_schedule(optimizer, self.trainer)}
