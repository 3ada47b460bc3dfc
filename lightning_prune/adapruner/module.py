"""AdaPruner (Yang et al.): learn which training samples to keep, jointly with the model.

A learnable mask ``m`` with one entry per training sample is trained together with the backbone;
``sigma_i = sigmoid(alpha * m_i)`` weighs sample ``i``'s loss. Per batch ``B``:

* classification ``mean_B(L_i * sigma_i)`` trains the backbone and the mask;
* selection ``mean_B(-log(L_i.detach() + 1e-5) * sigma_i)`` trains the mask only and pushes easy
  samples (small loss) out;
* compression ``lambda * (mean_B(sigma_i) - c)^2`` pulls the soft kept fraction to the target
  ``c = keep_ratio``, with ``lambda`` growing with the gap between the *hard* kept fraction
  ``r = mean_N(m > 0)`` and ``c``.

``alpha`` rises linearly over training so that ``sigma`` becomes binary; afterwards sample ``i``
is kept iff ``m_i > 0``. By default the mask stops training once its kept fraction reaches the
target (see ``stop_at_target``). Differences from the authors' code, on purpose: the mask is
indexed by each sample's index in the data set (never by its position in a shuffled batch), it has
no weight decay, and the best mask is chosen on a validation split, never on the test set.

This module is the ``LightningModule``: the loss, the training and validation hooks, the optimiser.
The ``alpha`` / ``lambda`` / learning-rate rules are in :mod:`.schedule`, argument and input checks
in :mod:`.checks`, the record of which indices (and labels) training showed in :mod:`.coverage`,
and pretrained-weight loading, the checkpoint entry and the Selection in :mod:`.state`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_prune.adapruner.checks import (
    check_arguments,
    check_choice,
    check_finite_mask,
    check_indices,
    check_labels,
    check_loss_shape,
    check_loss_values,
    check_optimizer,
)
from lightning_prune.adapruner.coverage import SeenIndices, SeenLabels
from lightning_prune.adapruner.schedule import (
    alpha_step_advance,
    cosine_lr_lambdas,
    lambda_weight,
    schedule_length,
    scheduled_alpha,
)
from lightning_prune.adapruner.state import CHECKPOINT_KEY, build_selection, check_entry, load_backbone_weights
from lightning_prune.data.indexed import INDEX_KEYS, split_batch
from lightning_prune.selection.selection import Selection

PerSampleLoss = Callable[[Any, Tensor], Tensor]
"""``per_sample_loss(outputs, targets) -> Tensor[B]``: one non-negative loss value per sample."""

OptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
"""Builds the optimiser from AdaPruner's parameter groups (backbone group, then the mask group)."""

SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
"""Builds an LR scheduler (stepped every optimiser step) or a Lightning ``lr_scheduler`` dict."""

SELECTION_EPS = 1e-5
# Logged name -> key in loss_terms()' result.
_TERMS = {
    "loss_classification": "classification",
    "loss_selection": "selection",
    "loss_compression": "compression",
    "kept_fraction": "kept_fraction",
    "alpha": "alpha",
    "lambda": "lambda",
}
_NO_INDICES = (
    "AdaPruner's training batches must carry sample indices: the mask has one entry per sample. Wrap the "
    "training set with lightning_prune.IndexedDataset so items become (x, y, index), or add an index key "
    f"(one of {list(INDEX_KEYS)}) to dict batches."
)


def cross_entropy_per_sample(outputs: Tensor, targets: Tensor) -> Tensor:
    """The default per-sample loss: cross-entropy of logits ``[B, C]`` against class indices ``[B]``."""
    return F.cross_entropy(outputs, targets, reduction="none")


class AdaPruner(pl.LightningModule):
    """AdaPruner as a ``LightningModule``: fit it on the full training set, then call :meth:`selection`.

    Example::

        >>> import lightning as L
        >>> import lightning_prune as lp
        >>> dm = lp.DigitsDataModule(batch_size=32)  # training batches (x, y, index)
        >>> quiet = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...              enable_model_summary=False)
        >>> pruner = lp.AdaPruner(lp.SmallCNN(), num_samples=len(dm.train_dataset), keep_ratio=0.7, warmup_epochs=1)
        >>> L.Trainer(max_epochs=4, **quiet).fit(pruner, datamodule=dm)  # CIFAR: 30 epochs, warmup_epochs=5
        >>> selection = pruner.selection()  # keep i iff m_i > 0
        >>> selection.num_samples, abs(selection.keep_ratio - 0.7) <= 0.02
        (1078, True)
        >>> selection.save("adapruner-0.7.npz").name
        'adapruner-0.7.npz'

    The training batches must carry sample indices: wrap the data set in
    :class:`~lightning_prune.IndexedDataset` (items ``(x, y, index)``) or yield dict batches with an
    ``"index"`` key. Validation batches may be ``(x, y)``.

    Warm-up. The paper starts from a backbone already trained on the full data. Either train it
    here for ``warmup_epochs`` (plain loss, mask frozen), or load trained weights with
    :meth:`from_pretrained_backbone` (or pass a trained backbone and keep ``warmup_epochs=0``).

    Args:
        backbone: the model; ``backbone(x)`` gives the outputs ``per_sample_loss`` reads.
        num_samples: N, the size of the full training set the sample indices refer to.
        keep_ratio: fraction of the samples to keep, in (0, 1).
        alpha: start and end of the sigmoid sharpness ``alpha`` (paper: (0.1, 5) on CIFAR,
            (0.1, 100) on Tiny-ImageNet).
        alpha_schedule: ``"step"`` (official code) raises ``alpha`` every training step, ``"epoch"``
            (paper text) once per epoch; linear from ``alpha[0]`` at the first mask step/epoch to
            ``alpha[1]`` at the last.
        pause_alpha_below_target: hold ``alpha`` while the kept fraction is below the target, so
            that the mask can still recover samples (official code; the paper does not say).
        lambda_rule: ``"official"``: ``lambda = 1 + scale * |r - c|`` with scale 50; ``"paper"``:
            ``lambda = scale * |r - c|`` with scale ``s = 100``.
        lambda_scale: overrides the rule's scale.
        tolerance: the run has converged when ``|r - c| <= tolerance`` (paper: 2%).
        stop_at_target: the mask stops training (is frozen) at the first step after which its kept
            fraction has come down to the target, ``r <= c`` (the paper's "done" condition); the
            backbone trains on. The loss pushes every sample out with a force of at least one unit
            (``L - log L >= 1``) that the compression term only balances well below the target, so
            a mask left to train on overshoots. ``False`` reproduces the official code, which trains
            the mask to the end; then use ``selection("best")``, the best validated epoch within
            tolerance.
        warmup_epochs: full-data epochs with plain loss and a frozen mask before the mask trains.
        per_sample_loss: ``(outputs, targets) -> Tensor[B]``, non-negative; default cross-entropy.
            Any task works (e.g. ``lambda out, y: (out.squeeze(-1) - y) ** 2`` for regression).
        lr, momentum, weight_decay: the default optimiser, SGD for the backbone (paper settings).
        mask_lr: learning rate of the mask's parameter group (never weight-decayed). The mask
            gradient is averaged over the batch, so larger batches need a larger ``mask_lr``.
        optimizer: replaces the default optimiser; called with the parameter groups
            ``[{"params": backbone, "name": "backbone"}, {"params": [mask], "lr": mask_lr,
            "weight_decay": 0.0, "name": "mask"}]``, e.g. ``lambda groups: torch.optim.AdamW(groups, lr=1e-3)``.
        lr_scheduler: ``"cosine"`` (default) anneals the backbone's learning rate to 0 over the fit,
            per step, and keeps the mask's constant so that it can still reach the target late in
            training; ``None`` for none; or a callable ``optimizer -> scheduler``.
        labels: the training labels in index order, for the selection's data-set fingerprint. If
            omitted, the integer targets seen in training are recorded per index instead.
        best_by: the validation metric :meth:`selection` uses with ``which="best"``: ``"val_loss"``
            (lowest) or ``"val_acc"`` (highest), among epochs whose mask is within tolerance.
    """

    # Registered buffers, declared so that type checkers see tensors, not ``Tensor | Module``.
    _alpha_progress: Tensor
    _alpha: Tensor
    _lambda: Tensor
    _mask_steps: Tensor
    _epochs_started: Tensor
    _frozen: Tensor
    _frozen_mask: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        num_samples: int,
        keep_ratio: float,
        alpha: tuple[float, float] = (0.1, 5.0),
        *,
        alpha_schedule: Literal["step", "epoch"] = "step",
        pause_alpha_below_target: bool = True,
        lambda_rule: Literal["official", "paper"] = "official",
        lambda_scale: float | None = None,
        tolerance: float = 0.02,
        stop_at_target: bool = True,
        warmup_epochs: int = 0,
        per_sample_loss: PerSampleLoss | None = None,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        mask_lr: float = 1.0,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: Literal["cosine"] | SchedulerFactory | None = "cosine",
        labels: Sequence[int] | np.ndarray | Tensor | None = None,
        best_by: Literal["val_loss", "val_acc"] = "val_loss",
    ) -> None:
        super().__init__()
        # Normalised before save_hyperparameters, which reads these locals: a checkpoint's hparams
        # then rebuild the same module (e.g. lambda_scale=None is saved as the rule's scale).
        keep_ratio, tolerance, alpha, lambda_scale = check_arguments(
            backbone,
            num_samples,
            keep_ratio,
            alpha,
            alpha_schedule=alpha_schedule,
            lambda_rule=lambda_rule,
            lambda_scale=lambda_scale,
            tolerance=tolerance,
            warmup_epochs=warmup_epochs,
            per_sample_loss=per_sample_loss,
            lr=lr,
            mask_lr=mask_lr,
            lr_scheduler=lr_scheduler,
            best_by=best_by,
        )
        self.save_hyperparameters(ignore=["backbone", "per_sample_loss", "optimizer", "lr_scheduler", "labels"])
        self.backbone = backbone
        self.num_samples = int(num_samples)
        self.keep_ratio, self.tolerance, self.alpha_range = keep_ratio, tolerance, alpha
        self.alpha_schedule, self.pause_alpha_below_target = alpha_schedule, bool(pause_alpha_below_target)
        self.lambda_rule, self.lambda_scale = lambda_rule, lambda_scale
        self.stop_at_target, self.warmup_epochs = bool(stop_at_target), warmup_epochs
        self.per_sample_loss = per_sample_loss or cross_entropy_per_sample
        self.lr, self.momentum, self.weight_decay, self.mask_lr = lr, momentum, weight_decay, float(mask_lr)
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.best_by = best_by
        self._given_labels = check_labels(labels, self.num_samples)
        self.mask = nn.Parameter(torch.ones(self.num_samples))
        self._register_schedule_state()
        self._init_run_state()

    def _register_schedule_state(self) -> None:
        # Schedule state lives in buffers so that it travels with the checkpoint's state_dict and the
        # module's device. Every rank computes it from the replicated mask, so DDP's buffer broadcast
        # from rank 0 never changes a value.
        self.register_buffer("_alpha_progress", torch.zeros((), dtype=torch.long))
        self.register_buffer("_alpha", torch.tensor(float(self.alpha_range[0])))
        self.register_buffer("_lambda", torch.tensor(0.0))
        self.register_buffer("_mask_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("_epochs_started", torch.zeros((), dtype=torch.long))
        # With stop_at_target the mask is frozen by restoring this copy after every optimiser step:
        # zeroing its gradient would not stop it, momentum (or Adam's moments) would carry it on.
        self.register_buffer("_frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("_frozen_mask", torch.zeros(self.num_samples if self.stop_at_target else 0))

    def _init_run_state(self) -> None:
        self._seen_indices = SeenIndices(self.num_samples)
        self._seen_labels = SeenLabels(self.num_samples)
        self._schedule_length: int | None = None
        self._check_batches = True
        self._converged_epoch: int | None = None
        self._best: dict[str, Any] | None = None
        self._val_sums: Tensor | None = None
        self._pre_step_mask: Tensor | None = None
        self._term_sums: Tensor | None = None
        self._term_count = 0

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_pretrained_backbone(
        cls,
        backbone: nn.Module,
        checkpoint: str | os.PathLike[str] | Mapping[str, Any],
        num_samples: int,
        keep_ratio: float,
        *,
        prefix: str | None = None,
        strict: bool = True,
        **kwargs: Any,
    ) -> AdaPruner:
        """An AdaPruner whose backbone starts from trained weights (the paper's warm-up).

        ``checkpoint`` is a path or a loaded object: a plain ``state_dict``, or a Lightning
        checkpoint (its ``"state_dict"`` entry). Keys of a Lightning checkpoint carry the attribute
        name of the backbone in that module (e.g. ``"model.conv1.weight"``); the prefix is found
        automatically, or give it as ``prefix="model."``. ``warmup_epochs`` defaults to 0 here;
        further keyword arguments go to :class:`AdaPruner`.
        """
        load_backbone_weights(backbone, checkpoint, prefix, strict)
        kwargs.setdefault("warmup_epochs", 0)
        return cls(backbone, num_samples, keep_ratio, **kwargs)

    # ------------------------------------------------------------------ public state
    def forward(self, x: Any) -> Any:
        return self.backbone(x)

    @property
    def kept_fraction(self) -> float:
        """Fraction of all N samples currently kept (``m > 0``)."""
        return float((self.mask.detach() > 0).float().mean())

    @property
    def alpha(self) -> float:
        """The sharpness ``alpha`` of the latest mask step (``alpha[0]`` before training)."""
        return float(self._alpha)

    @property
    def lambda_(self) -> float:
        """The compression weight ``lambda`` of the latest mask step."""
        return float(self._lambda)

    @property
    def converged(self) -> bool:
        """Whether the current mask keeps a fraction within ``tolerance`` of ``keep_ratio``, after mask training."""
        return int(self._mask_steps) > 0 and abs(self.kept_fraction - self.keep_ratio) <= self.tolerance + 1e-12

    @property
    def converged_epoch(self) -> int | None:
        """The first epoch at whose end the kept fraction was within tolerance (``None`` if never)."""
        return self._converged_epoch

    @property
    def frozen(self) -> bool:
        """Whether the mask has reached the target and stopped training (``stop_at_target``)."""
        return bool(self._frozen)

    @property
    def labels(self) -> np.ndarray | None:
        """The training labels in index order: given as ``labels=``, or recorded in training once every
        index was seen with an integer target (``None`` otherwise)."""
        if self._given_labels is not None:
            return self._given_labels
        return self._seen_labels.as_array()

    # ------------------------------------------------------------------ the loss
    def loss_terms(
        self, outputs: Any, targets: Tensor, indices: Tensor, *, alpha: float | Tensor | None = None
    ) -> dict[str, Tensor]:
        """AdaPruner's loss and its terms for one batch (``alpha`` defaults to the scheduled value).

        Returns a dict with ``loss``, ``classification``, ``selection``, ``compression``, and the
        ``lambda``, ``alpha``, ``kept_fraction`` and per-sample ``sigma`` and ``sample_loss`` used.
        """
        losses = self._per_sample(outputs, targets)
        if alpha is None:
            alpha = scheduled_alpha(self.alpha_range, self._alpha_progress, self._schedule_length or 1)
        alpha_t = torch.as_tensor(alpha, dtype=torch.float32, device=self.mask.device)
        kept = (self.mask.detach() > 0).float().mean()
        lam = lambda_weight(kept, self.keep_ratio, self.lambda_rule, self.lambda_scale)
        sigma = torch.sigmoid(alpha_t * self.mask[indices])
        classification = (losses * sigma).mean()
        # The detached loss keeps the selection term's gradient on the mask: it ranks samples, it
        # must not teach the backbone to make easy samples harder.
        selection = (-torch.log(losses.detach() + SELECTION_EPS) * sigma).mean()
        compression = lam * (sigma.mean() - self.keep_ratio) ** 2
        return {
            "loss": classification + selection + compression,
            "classification": classification,
            "selection": selection,
            "compression": compression,
            "lambda": lam,
            "alpha": alpha_t,
            "kept_fraction": kept,
            "sigma": sigma,
            "sample_loss": losses,
        }

    def _per_sample(self, outputs: Any, targets: Tensor) -> Tensor:
        return check_loss_shape(self.per_sample_loss(outputs, targets), targets)

    # ------------------------------------------------------------------ fit and epoch hooks
    def on_fit_start(self) -> None:
        self._check_batches = True
        self._seen_labels.recording = self._given_labels is None
        self._seen_labels.to(self.device)

    def on_train_start(self) -> None:
        trainer = self.trainer
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
        max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps > 0 else None
        if max_epochs is not None and self.warmup_epochs >= max_epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs} leaves no epoch to train the mask in Trainer(max_epochs="
                f"{max_epochs}). Raise max_epochs or lower warmup_epochs (or load a trained backbone with "
                "AdaPruner.from_pretrained_backbone and use warmup_epochs=0)."
            )
        self._schedule_length = schedule_length(
            self.alpha_schedule,
            self.warmup_epochs,
            max_epochs=max_epochs,
            max_steps=max_steps,
            batches_per_epoch=trainer.num_training_batches,
            accumulate_grad_batches=trainer.accumulate_grad_batches,
        )
        self._check_dataset_size()
        # Here, not in on_fit_start: some strategies restore the checkpoint's record after that hook.
        self._seen_indices.start_fit(self.device)

    def _check_dataset_size(self) -> None:
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        try:
            size = len(dataset) if dataset is not None else None
        except TypeError:  # an iterable dataset without a length: the seen indices tell at epoch end
            size = None
        if size is None or size == self.num_samples:
            return
        if size > self.num_samples:
            raise ValueError(
                f"The training set has {size} samples but AdaPruner(num_samples={self.num_samples}) has a mask "
                f"entry for only {self.num_samples}. Pass num_samples=len(train_set) ({size})."
            )
        raise ValueError(
            f"AdaPruner(num_samples={self.num_samples}), but the training set has {size} samples: the mask "
            f"entries of the other {self.num_samples - size} indices would never see a batch and stay kept, "
            f"unjudged. Pass num_samples=len(train_set) ({size})."
        )

    def on_train_epoch_start(self) -> None:
        self._term_sums, self._term_count = None, 0
        self._seen_indices.start_epoch()
        epoch = self.trainer.current_epoch
        self._epochs_started.fill_(epoch + 1)
        # Per-epoch alpha moves at the start of each mask epoch after the first, so a run resumed from
        # an end-of-epoch checkpoint takes the same decision as an uninterrupted one.
        if self.alpha_schedule == "epoch" and epoch > self.warmup_epochs:
            if not self.pause_alpha_below_target or self.kept_fraction >= self.keep_ratio:
                self._alpha_progress += 1

    def on_train_epoch_end(self) -> None:
        # The first epoch has shown every sample, so index and loss checks of later epochs would only
        # cost host synchronisations.
        self._check_batches = False
        check_finite_mask(self.mask)
        if self._seen_labels.recording:
            self._seen_labels.merge(self.trainer, self.all_gather)
        self._seen_indices.end_epoch(self.trainer, self.all_gather)
        epoch = self.trainer.current_epoch
        if epoch < self.warmup_epochs:
            return
        kept = self.kept_fraction
        within = abs(kept - self.keep_ratio) <= self.tolerance + 1e-12
        if self._term_sums is not None:
            means = self._term_sums / max(self._term_count, 1)
            self.log_dict(
                {f"{key}_epoch": means[i] for i, key in enumerate(_TERMS) if key.startswith("loss_")}, sync_dist=True
            )
        # These three are the same on every rank; their end-of-epoch value says more than a mean.
        self.log_dict({"kept_fraction_epoch": kept, "alpha_epoch": self.alpha, "lambda_epoch": self.lambda_})
        self.log("converged", float(within), on_step=False, on_epoch=True)
        if within and self._converged_epoch is None:
            self._converged_epoch = epoch
            rank_zero_info(
                f"AdaPruner: kept fraction {kept:.4f} is within {self.tolerance:g} of the target "
                f"{self.keep_ratio:g} at the end of epoch {epoch} (alpha {self.alpha:.3g})."
            )

    def on_fit_end(self) -> None:
        if int(self._mask_steps) > 0 and not self.converged:
            rank_zero_warn(
                f"AdaPruner: the kept fraction is {self.kept_fraction:.4f} after training, not within "
                f"{self.tolerance:g} of the target {self.keep_ratio:g}. Train for more epochs, raise mask_lr, "
                "or widen alpha; pruner.selection() still returns the current mask."
            )
        never_seen = self._seen_indices.never_seen_message()
        if never_seen is not None:
            rank_zero_warn(f"{never_seen} pruner.selection() will refuse this mask.")

    # ------------------------------------------------------------------ training steps
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        inputs, targets, indices = self._training_batch(batch)
        if self._check_batches:
            check_indices(indices, self.num_samples)
        self._seen_indices.record(indices, batch_idx)
        if self._seen_labels.recording:
            self._seen_labels.record(targets, indices)
        outputs = self.backbone(inputs)
        if self.current_epoch < self.warmup_epochs:
            losses = self._per_sample(outputs, targets)
            if self._check_batches:
                check_loss_values(losses)
            # Zero-weighted use of the mask: DDP expects a gradient for every trainable parameter on
            # every step. The zero gradient leaves the mask where it is (no weight decay, no momentum).
            loss = losses.mean() + 0.0 * self.mask[indices].sum()
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return {"loss": loss, "logits": outputs}

        terms = self.loss_terms(outputs, targets, indices)
        if self._check_batches:
            check_loss_values(terms["sample_loss"])
        with torch.no_grad():
            self._alpha.copy_(terms["alpha"])
            self._lambda.copy_(terms["lambda"])
            self._mask_steps += 1
            if self.alpha_schedule == "step":
                self._alpha_progress += alpha_step_advance(
                    terms["kept_fraction"], self.keep_ratio, self.pause_alpha_below_target
                )
        self.log("train_loss", terms["loss"], on_step=True, on_epoch=True)
        self._log_terms(terms)
        return {"loss": terms["loss"], "logits": outputs}

    def _training_batch(self, batch: Any) -> tuple[Any, Tensor, Tensor]:
        inputs, targets, indices = split_batch(batch, need_indices=False, class_targets=False)
        if indices is None:
            raise ValueError(_NO_INDICES)
        assert targets is not None  # split_batch raised otherwise (need_targets)
        return inputs, targets, indices.to(self.mask.device)

    def _log_terms(self, terms: dict[str, Tensor]) -> None:
        # Each self.log call costs about a millisecond of Python; six per step would dominate a small
        # model's step. The terms are summed on the device and logged per step only where a logger
        # records that step, and as epoch means at the end of the epoch.
        values = torch.stack([terms[name].detach().float() for name in _TERMS.values()])
        self._term_sums = values if self._term_sums is None else values + self._term_sums
        self._term_count += 1
        connector = getattr(self.trainer, "_logger_connector", None)  # Lightning's own "log this step?"
        if self.trainer.loggers and getattr(connector, "should_update_logs", True):
            self.log_dict(
                {f"{key}_step": value for key, value in zip(_TERMS, values, strict=True)}, on_step=True, on_epoch=False
            )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.stop_at_target and self.current_epoch >= self.warmup_epochs:
            self._pre_step_mask = self.mask.detach().clone()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.stop_at_target or self.current_epoch < self.warmup_epochs:
            return
        # All on the device, without a host synchronisation: the decision is a tensor, applied with
        # torch.where. Every rank holds the same mask, so every rank freezes at the same step.
        with torch.no_grad():
            self.mask.copy_(torch.where(self._frozen, self._frozen_mask, self.mask))
            after = (self.mask > 0).float().mean()
            reached = after <= self.keep_ratio
            newly = reached & ~self._frozen
            # Momentum moves many entries at once, so one step can carry the kept fraction well past
            # the target: freeze whichever of the masks before and after the step is closer to it.
            before_mask = self._pre_step_mask if self._pre_step_mask is not None else self.mask
            before = (before_mask > 0).float().mean()
            use_before = (before - self.keep_ratio).abs() < (self.keep_ratio - after).abs()
            closer = torch.where(use_before, before_mask, self.mask)
            self._frozen_mask.copy_(torch.where(newly, closer, self._frozen_mask))
            self.mask.copy_(torch.where(newly, closer, self.mask))
            self._frozen |= reached
        self._pre_step_mask = None

    # ------------------------------------------------------------------ validation (model selection)
    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # Reported only: nothing in AdaPruner reads test metrics, so the test set never selects a mask.
        self._evaluate(batch, "test")

    def _evaluate(self, batch: Any, stage: str) -> None:
        inputs, targets, _ = split_batch(batch, need_indices=False, class_targets=False)
        assert targets is not None  # split_batch raised otherwise (need_targets)
        outputs = self.backbone(inputs)
        losses = self._per_sample(outputs, targets)
        self.log(f"{stage}_loss", losses.mean(), on_epoch=True, sync_dist=True, batch_size=losses.shape[0])
        correct = None
        if _is_classification(outputs, targets):
            correct = (outputs.argmax(dim=1) == targets).float()
            self.log(f"{stage}_acc", correct.mean(), on_epoch=True, sync_dist=True, batch_size=losses.shape[0])
        if stage == "val" and self._val_sums is not None:
            self._val_sums[0] += losses.detach().double().sum()
            self._val_sums[1] += losses.shape[0]
            if correct is not None:
                self._val_sums[2] += correct.double().sum()
            else:
                self._val_sums[2] = float("nan")

    def on_validation_epoch_end(self) -> None:
        sums = self._val_sums
        self._val_sums = None
        if sums is None or self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        if self.current_epoch < self.warmup_epochs or int(self._mask_steps) == 0:
            return
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        if float(sums[1]) == 0:
            return
        if self.best_by == "val_acc" and not math.isfinite(float(sums[2])):
            raise ValueError(
                "best_by='val_acc' needs classification outputs ([B, C] logits and integer targets); use "
                "best_by='val_loss' for this task."
            )
        value = float(sums[0] / sums[1]) if self.best_by == "val_loss" else float(sums[2] / sums[1])
        kept = self.kept_fraction
        if abs(kept - self.keep_ratio) > self.tolerance + 1e-12:
            return
        better = self._best is None or (
            value < self._best["value"] if self.best_by == "val_loss" else value > self._best["value"]
        )
        if better:
            self._best = {
                "keep": (self.mask.detach() > 0).cpu().clone(),
                "value": value,
                "metric": self.best_by,
                "epoch": int(self.current_epoch),
                "kept_fraction": kept,
                "alpha": self.alpha,
            }

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        backbone_params = [p for p in self.backbone.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = []
        if backbone_params:
            groups.append({"params": backbone_params, "name": "backbone"})
        groups.append({"params": [self.mask], "lr": self.mask_lr, "weight_decay": 0.0, "name": "mask"})
        optimizer: torch.optim.Optimizer
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        else:
            optimizer = check_optimizer(self.optimizer_factory(groups), self.mask)
        factory = self.lr_scheduler_factory
        if factory is None:
            return optimizer
        if isinstance(factory, str):  # "cosine", the only string __init__ accepts
            names = [group.get("name") for group in optimizer.param_groups]
            lambdas = cosine_lr_lambdas(names, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = factory(optimizer)
        if isinstance(scheduler, Mapping):
            return {"optimizer": optimizer, "lr_scheduler": dict(scheduler)}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "seen_labels": self._seen_labels.labels.detach().cpu().clone(),
            "converged_epoch": self._converged_epoch,
            "best": dict(self._best) if self._best is not None else None,
            "num_samples": self.num_samples,
            **self._seen_indices.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            return
        check_entry(state, self.num_samples)
        self._seen_labels.labels = state["seen_labels"].to(self._seen_labels.labels.device)
        self._seen_indices.load_state_dict(state)
        self._converged_epoch = state.get("converged_epoch")
        self._best = state.get("best")

    # ------------------------------------------------------------------ the result
    def selection(self, which: Literal["last", "best"] = "last") -> Selection:
        """The kept samples as a :class:`~lightning_prune.Selection` (keep ``i`` iff ``m_i > 0``).

        ``which="last"`` binarises the current mask; ``which="best"`` returns the mask of the epoch
        with the best validation metric (``best_by``) among those within tolerance of the target.
        Refuses a mask with entries for indices that never appeared in a training batch.
        """
        check_choice("which", which, ("last", "best"))
        if int(self._mask_steps) == 0:
            raise RuntimeError(
                "AdaPruner has not trained its mask yet: run trainer.fit(pruner, ...) with more epochs than "
                "warmup_epochs (the mask is frozen during warm-up)."
            )
        self._seen_indices.check_selectable()
        best = None
        if which == "last":
            keep, alpha_reached = (self.mask.detach() > 0).cpu().numpy(), self.alpha
        else:
            best = self._best
            if best is None:
                raise RuntimeError(
                    "No best mask: it is chosen at validation time among epochs whose kept fraction is within "
                    f"{self.tolerance:g} of {self.keep_ratio:g}, and no such validated epoch exists. Pass a "
                    "validation dataloader to fit(), train longer, or use selection('last')."
                )
            keep, alpha_reached = best["keep"].numpy(), best["alpha"]
        return build_selection(
            self,
            keep,
            which=which,
            alpha_reached=alpha_reached,
            epochs=int(self._epochs_started),
            mask_steps=int(self._mask_steps),
            best=best,
        )


def _is_classification(outputs: Any, targets: Any) -> bool:
    return (
        isinstance(outputs, Tensor)
        and isinstance(targets, Tensor)
        and outputs.dim() == 2
        and targets.dim() == 1
        and not targets.is_floating_point()
        and outputs.shape[0] == targets.shape[0]
    )
