"""Where a dynamic method gets each sample's loss: from ``training_step``, for any task and loss.

InfoBatch (and the methods built on it) rank samples by their latest training loss. Two sources:

* **``training_step`` returns it** (any task: regression, segmentation, detection, language models):
  an unreduced ``"loss_per_sample"`` entry of shape ``[B]`` next to ``"loss"``, as InfoBatch's
  official API takes the unreduced loss. :func:`weighted_outputs` builds both entries from the
  per-sample loss and the batch, applying the weights the sampler serves::

      def training_step(self, batch, batch_idx):
          x, y, _ = batch[:3]
          per_sample = F.mse_loss(self(x).squeeze(1), y, reduction="none")  # [B]
          return lp.weighted_outputs(per_sample, batch)  # {"loss": mean(w * l), "loss_per_sample": l}

  Reduce everything but the batch dimension first: a segmentation loss over pixels with
  ``.mean(dim=(1, 2))``, a language model's token losses by each sequence's masked mean.
* **``loss_fn(logits, targets)``** on the ``"logits"`` ``training_step`` returns (classification;
  cross-entropy when ``loss_fn`` is not given), as the score collectors read them.

The source is fixed by the first training batch of a fit and must stay the same: a ``training_step``
that returns ``"loss_per_sample"`` while the method was given ``loss_fn=`` is refused (two losses,
no telling which one the user meant), as is one that returns neither ``"loss_per_sample"`` nor
``"logits"``, and one whose targets are not class labels without ``"loss_per_sample"`` (cross-entropy
would be meaningless). Each message names the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_prune.collectors.base import BatchAdapter, BatchView, default_adapter
from lightning_prune.data.indexed import batch_weights, split_batch

PER_SAMPLE_LOSS = "loss_per_sample"
"""The key of the unreduced loss, ``[B]``, in the dict ``training_step`` returns."""

FROM_TRAINING_STEP = "training_step"
FROM_LOSS_FN = "loss_fn"
LOSS_SOURCES = (FROM_TRAINING_STEP, FROM_LOSS_FN)


def weighted_outputs(per_sample_loss: Tensor, batch: Any, **outputs: Any) -> dict[str, Any]:
    """What ``training_step`` returns under dynamic pruning, for any task: the weighted loss and the
    unreduced one.

    Returns ``{"loss": (weight * per_sample_loss).mean(), "loss_per_sample": per_sample_loss, **outputs}``
    with the weights the batch carries (:func:`~lightning_prune.batch_weights`: InfoBatch's
    ``1 / (1 - prune_ratio)`` on the kept well-learned samples, a weighted selection's weights, ones
    for the ``(x, y, index)`` batches of the collectors). The mean over the batch (not normalised by the
    weights' sum) keeps InfoBatch's rescaling, so the pruned epochs' expected gradient is the full data's.

    Args:
        per_sample_loss: one loss per sample, shape ``[B]`` (``reduction="none"``, reduced over every
            other dimension).
        batch: the training batch, as ``training_step`` received it.
        outputs: more entries to return (e.g. ``logits=logits`` for score collectors).

    Example::

        >>> import torch
        >>> import lightning_prune as lp
        >>> batch = (torch.zeros(3, 2), torch.tensor([0.5, 1.0, 2.0]), torch.arange(3), torch.tensor([1.0, 2.0, 1.0]))
        >>> out = lp.weighted_outputs(torch.tensor([1.0, 1.0, 4.0]), batch)
        >>> float(out["loss"]), out["loss_per_sample"].tolist()
        (2.3333332538604736, [1.0, 1.0, 4.0])
    """
    if not isinstance(per_sample_loss, Tensor):
        raise TypeError(
            f"weighted_outputs needs the per-sample loss as a tensor of shape [B]; got {type(per_sample_loss).__name__}."
        )
    weights = batch_weights(batch)
    if per_sample_loss.dim() != 1 or per_sample_loss.shape[0] != weights.shape[0]:
        raise ValueError(
            f"weighted_outputs needs one loss per sample, shape ({weights.shape[0]},); got shape "
            f"{tuple(per_sample_loss.shape)}. Compute the loss with reduction='none' and reduce every dimension but "
            "the batch's (e.g. per_pixel.mean(dim=(1, 2)) for segmentation, a sequence's masked token mean for a "
            "language model)."
        )
    for reserved in ("loss", PER_SAMPLE_LOSS):
        if reserved in outputs:
            raise TypeError(f"weighted_outputs computes {reserved!r} itself; do not pass it among the extra outputs.")
    loss = (weights.to(device=per_sample_loss.device, dtype=per_sample_loss.dtype) * per_sample_loss).mean()
    return {"loss": loss, PER_SAMPLE_LOSS: per_sample_loss, **outputs}


@dataclass
class LossView(BatchView):
    """A batch view whose per-sample loss came from ``training_step``, not from class logits.

    The collector machinery keys its state by sample index and screens class logits and targets; a
    loss read straight from ``training_step`` has neither, so the view presents one class (a column
    of zero logits, every target 0) and carries the loss beside it. The scores of such a fit carry
    no labels.
    """

    per_sample_loss: Tensor | None = None


class PerSampleLossReader:
    """The batch adapter of InfoBatch and its subclasses: reads ``training_step``'s ``"loss_per_sample"``
    when it returns one, else the logits (and targets) ``loss_fn`` needs (see the module docs).

    Args:
        owner: the method's name, for the messages.
        loss_fn_given: whether the user passed ``loss_fn=`` (then ``"loss_per_sample"`` is refused).
        adapter: the user's adapter, if any; it reads the batch's indices (and logits, targets) when the
            batch is not ``(x, y, index, ...)`` or a dict with an index key.
    """

    def __init__(self, owner: str, loss_fn_given: bool, adapter: BatchAdapter | None = None) -> None:
        self.owner = owner
        self.loss_fn_given = loss_fn_given
        self.adapter = adapter
        self.source: str | None = None
        """Where this fit's losses come from (one of :data:`LOSS_SOURCES`), fixed by its first batch."""

    def __call__(self, outputs: Any, batch: Any, pl_module: pl.LightningModule) -> BatchView:
        has_loss = isinstance(outputs, Mapping) and PER_SAMPLE_LOSS in outputs
        source = FROM_TRAINING_STEP if has_loss else FROM_LOSS_FN
        self._settle(source, outputs)
        if has_loss:
            return self._loss_view(outputs[PER_SAMPLE_LOSS], batch, outputs, pl_module)
        if self.adapter is not None:
            return self.adapter(outputs, batch, pl_module)
        if not isinstance(outputs, Mapping) or "logits" not in outputs:
            got = f"a dict with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                f"{self.owner} needs each sample's training loss, but training_step returned {got}. Return the "
                f"unreduced loss: `return lp.weighted_outputs(per_sample_loss, batch)` (it gives {{'loss': weighted "
                f"mean, '{PER_SAMPLE_LOSS}': per_sample_loss}}, for any task), or, for classification, return "
                "{'loss': loss, 'logits': logits} and the loss is loss_fn(logits, targets) (cross-entropy unless "
                f"{self.owner}(loss_fn=...) says otherwise)."
            )
        _, targets, _ = split_batch(batch, need_indices=False, class_targets=False)
        targets = torch.as_tensor(targets)
        if targets.is_floating_point() or targets.is_complex():
            raise ValueError(
                f"{self.owner} computes each sample's loss as loss_fn(logits, targets) with integer class targets, but "
                f"this batch's targets are {targets.dtype}. For regression or any loss that is not on class labels, "
                f"return the unreduced loss from training_step: `return lp.weighted_outputs(per_sample_loss, batch)` "
                f"(a '{PER_SAMPLE_LOSS}' entry of shape [B])."
            )
        return default_adapter(outputs, batch, pl_module)

    def reset(self) -> None:
        """Forget the source: a new fit fixes its own by its first batch."""
        self.source = None

    def _settle(self, source: str, outputs: Any) -> None:
        if source == FROM_TRAINING_STEP and self.loss_fn_given:
            raise ValueError(
                f"{self.owner} was given loss_fn=..., and training_step also returns '{PER_SAMPLE_LOSS}': two "
                f"per-sample losses, which may differ. Keep one: drop {self.owner}(loss_fn=...) to rank samples by "
                f"training_step's '{PER_SAMPLE_LOSS}' (any task), or stop returning '{PER_SAMPLE_LOSS}' to use loss_fn "
                "on the logits."
            )
        if self.source is None:
            self.source = source
        elif self.source != source:
            before, now = ("returned", "does not") if self.source == FROM_TRAINING_STEP else ("did not return", "does")
            raise ValueError(
                f"training_step {before} '{PER_SAMPLE_LOSS}' on the fit's first batches but {now} now; {self.owner} "
                f"would rank samples by two different losses. Return '{PER_SAMPLE_LOSS}' from every training_step "
                "(lp.weighted_outputs(per_sample_loss, batch)), or from none."
            )

    def _loss_view(self, loss: Any, batch: Any, outputs: Any, pl_module: pl.LightningModule) -> LossView:
        if self.adapter is not None:
            indices = self.adapter(outputs, batch, pl_module).indices
        else:
            _, _, indices = split_batch(batch, need_targets=False, class_targets=False)
        if not isinstance(loss, Tensor):
            raise TypeError(
                f"training_step's '{PER_SAMPLE_LOSS}' must be a tensor of one loss per sample, shape "
                f"({indices.shape[0]},); it is {type(loss).__name__}."
            )
        batch_size = int(indices.shape[0])
        device = loss.device
        return LossView(
            logits=torch.zeros(batch_size, 1, device=device),
            targets=torch.zeros(batch_size, dtype=torch.int64, device=device),
            indices=indices,
            per_sample_loss=loss,
        )
