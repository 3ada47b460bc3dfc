"""``Classifier``: the reference ``LightningModule`` for training any backbone, weighted or not."""

from __future__ import annotations

from typing import Any, Mapping

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_prune.data.indexed import INPUT_KEYS, TARGET_KEYS, unpack_batch

SCHEDULERS = ("cosine", "none")
WEIGHTED_LOSSES = ("normalized", "mean")


def _infer_num_classes(backbone: nn.Module) -> int:
    linears = [module for module in backbone.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(
            f"Cannot infer the number of classes of {type(backbone).__name__}: it has no nn.Linear layer. "
            "Pass num_classes=... to Classifier."
        )
    return int(linears[-1].out_features)


def batch_weights(batch: Any) -> Tensor | None:
    """The per-sample weights of a batch, or ``None`` when it carries none.

    Weighted batches are those of :class:`~lightning_prune.PrunedDataModule` with ``weighted=True``:
    tuples ``(x, y, index, weight)`` or dicts with a ``"weight"`` entry.
    """
    if isinstance(batch, Mapping):
        return batch.get("weight")
    if isinstance(batch, (tuple, list)) and len(batch) >= 4:
        return batch[3]
    return None


def _inputs_and_targets(batch: Any, need_targets: bool = True) -> tuple[Any, Tensor | None]:
    """Inputs and targets of an evaluation batch: ``(x, y, ...)`` tuples or dicts; no index needed."""
    if isinstance(batch, Mapping):
        input_key = next((k for k in INPUT_KEYS if k in batch), None)
        target_key = next((k for k in TARGET_KEYS if k in batch), None)
        if input_key is None or (need_targets and target_key is None):
            raise ValueError(
                f"dict batch needs an input key (one of {list(INPUT_KEYS)}) and a target key (one of "
                f"{list(TARGET_KEYS)}); got keys {sorted(batch)}."
            )
        return batch[input_key], batch[target_key] if target_key is not None else None
    if isinstance(batch, (tuple, list)) and len(batch) >= (2 if need_targets else 1):
        return batch[0], batch[1] if len(batch) > 1 else None
    if isinstance(batch, Tensor) and not need_targets:
        return batch, None
    raise ValueError(f"Expected an (x, y, ...) tuple or a dict batch, got {type(batch).__name__}.")


class Classifier(pl.LightningModule):
    """Image classification with any backbone, as the pruning papers train it.

    Training batches are ``(x, y, index)`` or ``(x, y, index, weight)`` (or dicts, see
    :func:`~lightning_prune.unpack_batch`); ``training_step`` returns ``{"loss", "logits"}`` so the
    score collectors can read the logits. Validation/test batches may be ``(x, y)`` or carry more.

    Per-sample weights, when the batch has them, give the loss
    ``sum_i w_i * CE_i / sum_i w_i`` (``weighted_loss="normalized"``, a weighted mean; a batch whose
    weights are all zero contributes no gradient) or ``mean_i(w_i * CE_i)`` (``"mean"``, which like
    TDDS's official Eq. 13 code also scales the loss by the batch's mean weight).

    Optimiser: SGD with ``momentum`` and ``weight_decay``; ``scheduler="cosine"``
    anneals the learning rate to 0 over the whole run, stepped per optimiser step
    (``trainer.estimated_stepping_batches``). Logs ``train_loss``, ``val_loss``/``val_acc`` and
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
        self.num_classes = int(num_classes) if num_classes is not None else _infer_num_classes(backbone)
        self.val_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, y, _ = unpack_batch(batch)
        logits = self(x)
        per_sample = F.cross_entropy(logits, y, reduction="none")
        weights = batch_weights(batch)
        if weights is None:
            loss = per_sample.mean()
        else:
            weights = weights.to(per_sample.dtype).reshape(-1)
            if self.hparams.weighted_loss == "normalized":
                loss = (weights * per_sample).sum() / weights.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)
            else:
                loss = (weights * per_sample).mean()
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=y.numel(), sync_dist=True)
        return {"loss": loss, "logits": logits}

    def _evaluate(self, batch: Any, stage: str, metric: MulticlassAccuracy) -> Tensor:
        x, y = _inputs_and_targets(batch)
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
        return self(_inputs_and_targets(batch, need_targets=False)[0])

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
