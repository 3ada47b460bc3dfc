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
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Literal, Mapping, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_prune.data.indexed import INDEX_KEYS, INPUT_KEYS, TARGET_KEYS
from lightning_prune.selection.files import label_fingerprint
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
_CHECKPOINT_KEY = "adapruner"


def cross_entropy_per_sample(outputs: Tensor, targets: Tensor) -> Tensor:
    """The default per-sample loss: cross-entropy of logits ``[B, C]`` against class indices ``[B]``."""
    return F.cross_entropy(outputs, targets, reduction="none")


class AdaPruner(pl.LightningModule):
    """AdaPruner as a ``LightningModule``: fit it on the full training set, then call :meth:`selection`.

    Example::

        pruner = AdaPruner(backbone, num_samples=len(train_set), keep_ratio=0.7, warmup_epochs=5)
        L.Trainer(max_epochs=30).fit(pruner, train_loader, val_loader)   # batches (x, y, index)
        sel = pruner.selection()          # keep i iff m_i > 0
        sel.save("adapruner-0.7.npz")

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
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}.")
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(
                f"num_samples must be a positive integer (the size of the full training set), got {num_samples!r}. "
                "Pass num_samples=len(train_set)."
            )
        keep_ratio = _check_fraction("keep_ratio", keep_ratio, "the fraction of samples to KEEP, e.g. 0.7")
        tolerance = _check_fraction("tolerance", tolerance, "e.g. 0.02 for the paper's 2%")
        alpha = _check_alpha(alpha)
        _check_choice("alpha_schedule", alpha_schedule, ("step", "epoch"))
        _check_choice("lambda_rule", lambda_rule, ("official", "paper"))
        _check_choice("best_by", best_by, ("val_loss", "val_acc"))
        if lambda_scale is None:
            lambda_scale = 50.0 if lambda_rule == "official" else 100.0
        for name, value in (("lambda_scale", lambda_scale), ("mask_lr", mask_lr), ("lr", lr)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        if not isinstance(warmup_epochs, int) or isinstance(warmup_epochs, bool) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}.")
        if per_sample_loss is not None and not callable(per_sample_loss):
            raise TypeError("per_sample_loss must be a callable (outputs, targets) -> Tensor[B].")
        if not (lr_scheduler is None or lr_scheduler == "cosine" or callable(lr_scheduler)):
            raise ValueError(f"lr_scheduler must be 'cosine', None or a callable, got {lr_scheduler!r}.")

        self.save_hyperparameters(ignore=["backbone", "per_sample_loss", "optimizer", "lr_scheduler", "labels"])
        self.backbone = backbone
        self.num_samples = int(num_samples)
        self.keep_ratio = keep_ratio
        self.alpha_range = alpha
        self.alpha_schedule = alpha_schedule
        self.pause_alpha_below_target = bool(pause_alpha_below_target)
        self.lambda_rule = lambda_rule
        self.lambda_scale = float(lambda_scale)
        self.tolerance = tolerance
        self.stop_at_target = bool(stop_at_target)
        self.warmup_epochs = warmup_epochs
        self.per_sample_loss = per_sample_loss or cross_entropy_per_sample
        self.lr, self.momentum, self.weight_decay, self.mask_lr = lr, momentum, weight_decay, float(mask_lr)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.best_by = best_by

        self.mask = nn.Parameter(torch.ones(self.num_samples))
        # Schedule state lives in buffers so that it travels with the checkpoint's state_dict and the
        # module's device. Every rank computes it from the replicated mask, so DDP's buffer broadcast
        # from rank 0 never changes a value.
        self.register_buffer("_alpha_progress", torch.zeros((), dtype=torch.long))
        self.register_buffer("_alpha", torch.tensor(float(alpha[0])))
        self.register_buffer("_lambda", torch.tensor(0.0))
        self.register_buffer("_mask_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("_epochs_started", torch.zeros((), dtype=torch.long))
        # With stop_at_target the mask is frozen by restoring this copy after every optimiser step:
        # zeroing its gradient would not stop it, momentum (or Adam's moments) would carry it on.
        self.register_buffer("_frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("_frozen_mask", torch.zeros(self.num_samples) if stop_at_target else torch.zeros(0))

        self._given_labels: np.ndarray | None = None
        if labels is not None:
            given = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
            if given.shape != (self.num_samples,):
                raise ValueError(
                    f"labels has shape {given.shape}, but num_samples={self.num_samples}: pass one label per "
                    "training sample, in index order."
                )
            if given.size and not np.issubdtype(given.dtype, np.integer):
                raise TypeError(f"labels must be integer class indices, got dtype {given.dtype}.")
            self._given_labels = given.astype(np.int64)
        # Deliberately not a buffer: each rank records the labels of the samples it saw, and DDP's
        # per-step buffer broadcast would overwrite them with rank 0's. Ranks merge at epoch end.
        self._seen_labels = torch.full((self.num_samples,), -1, dtype=torch.long)
        self._records_labels = True
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
        checkpoint: str | os.PathLike | Mapping[str, Any],
        num_samples: int,
        keep_ratio: float,
        *,
        prefix: str | None = None,
        strict: bool = True,
        **kwargs: Any,
    ) -> "AdaPruner":
        """An AdaPruner whose backbone starts from trained weights (the paper's warm-up).

        ``checkpoint`` is a path or a loaded object: a plain ``state_dict``, or a Lightning
        checkpoint (its ``"state_dict"`` entry). Keys of a Lightning checkpoint carry the attribute
        name of the backbone in that module (e.g. ``"model.conv1.weight"``); the prefix is found
        automatically, or give it as ``prefix="model."``. ``warmup_epochs`` defaults to 0 here;
        further keyword arguments go to :class:`AdaPruner`.
        """
        if isinstance(checkpoint, (str, os.PathLike)):
            try:
                loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise FileNotFoundError(f"{checkpoint}: no such checkpoint file.") from None
            except Exception as error:  # weights_only refuses pickled objects it does not know
                raise ValueError(
                    f"{checkpoint}: could not read it as a weights-only checkpoint ({type(error).__name__}: {error}). "
                    "If you trust the file, load it yourself with torch.load(path, weights_only=False) and pass "
                    "the state_dict as `checkpoint`."
                ) from error
        else:
            loaded = checkpoint
        state = _extract_state_dict(loaded)
        state = _match_prefix(state, backbone, prefix, strict)
        missing, _ = backbone.load_state_dict(state, strict=strict)
        if missing and not strict:
            rank_zero_warn(
                f"AdaPruner.from_pretrained_backbone: {len(missing)} backbone weights are not in the checkpoint."
            )
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
            alpha = self._scheduled_alpha()
        alpha_t = torch.as_tensor(alpha, dtype=torch.float32, device=self.mask.device)
        kept = (self.mask.detach() > 0).float().mean()
        lam = self._lambda_of(kept)
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

    def _lambda_of(self, kept: Tensor) -> Tensor:
        gap = (kept - self.keep_ratio).abs()
        base = 1.0 if self.lambda_rule == "official" else 0.0
        return base + self.lambda_scale * gap

    def _scheduled_alpha(self) -> Tensor:
        start, end = self.alpha_range
        length = self._schedule_length or 1
        fraction = torch.clamp(self._alpha_progress.float() / length, max=1.0)
        return start + (end - start) * fraction

    def _per_sample(self, outputs: Any, targets: Tensor) -> Tensor:
        losses = self.per_sample_loss(outputs, targets)
        if not isinstance(losses, Tensor):
            raise TypeError(f"per_sample_loss must return a Tensor of shape [B], got {type(losses).__name__}.")
        batch = targets.shape[0] if isinstance(targets, Tensor) and targets.dim() else None
        if losses.dim() != 1 or (batch is not None and losses.shape[0] != batch):
            raise ValueError(
                f"per_sample_loss returned shape {tuple(losses.shape)}; it must return one loss per sample, "
                f"shape [{batch if batch is not None else 'B'}]. Use reduction='none' and average any other "
                "dimensions yourself (e.g. .flatten(1).mean(1))."
            )
        return losses.float()

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self) -> None:
        self._check_batches = True
        self._records_labels = self._given_labels is None
        self._seen_labels = self._seen_labels.to(self.device)

    def on_train_start(self) -> None:
        trainer = self.trainer
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
        if max_epochs is not None and self.warmup_epochs >= max_epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs} leaves no epoch to train the mask in Trainer(max_epochs="
                f"{max_epochs}). Raise max_epochs or lower warmup_epochs (or load a trained backbone with "
                "AdaPruner.from_pretrained_backbone and use warmup_epochs=0)."
            )
        self._schedule_length = self._compute_schedule_length(max_epochs)
        self._check_dataset_size()

    def _compute_schedule_length(self, max_epochs: int | None) -> int:
        trainer = self.trainer
        per_epoch = trainer.num_training_batches
        max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps > 0 else None
        if self.alpha_schedule == "epoch":
            epochs = max_epochs
            if max_steps is not None and math.isfinite(per_epoch) and per_epoch > 0:
                by_steps = math.ceil(max_steps * trainer.accumulate_grad_batches / per_epoch)
                epochs = by_steps if epochs is None else min(epochs, by_steps)
            if epochs is None:
                raise ValueError(
                    "alpha_schedule='epoch' needs a finite number of epochs: set Trainer(max_epochs=...) or max_steps."
                )
            return max(epochs - self.warmup_epochs - 1, 1)
        if not math.isfinite(per_epoch):
            if max_steps is None:
                raise ValueError(
                    "The training dataloader has no length, so the alpha schedule cannot be laid out: set "
                    "Trainer(max_steps=...) or give the dataloader a length."
                )
            return max(max_steps * trainer.accumulate_grad_batches - 1, 1)
        total = per_epoch * max_epochs if max_epochs is not None else None
        if max_steps is not None:
            capped = max_steps * trainer.accumulate_grad_batches
            total = capped if total is None else min(total, capped)
        if total is None:
            raise ValueError(
                "AdaPruner needs a finite run to schedule alpha: set Trainer(max_epochs=...) or max_steps."
            )
        return max(int(total - self.warmup_epochs * per_epoch) - 1, 1)

    def _check_dataset_size(self) -> None:
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        try:
            size = len(dataset) if dataset is not None else None
        except TypeError:
            size = None
        if size is not None and size > self.num_samples:
            raise ValueError(
                f"The training set has {size} samples but AdaPruner(num_samples={self.num_samples}) has a mask "
                f"entry for only {self.num_samples}. Pass num_samples=len(train_set) ({size})."
            )

    def on_train_epoch_start(self) -> None:
        self._term_sums, self._term_count = None, 0
        epoch = self.trainer.current_epoch
        self._epochs_started.fill_(epoch + 1)
        # Per-epoch alpha moves at the start of each mask epoch after the first, so a run resumed from
        # an end-of-epoch checkpoint takes the same decision as an uninterrupted one.
        if self.alpha_schedule == "epoch" and epoch > self.warmup_epochs:
            if not self.pause_alpha_below_target or self.kept_fraction >= self.keep_ratio:
                self._alpha_progress += 1

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        inputs, targets, indices = self._split_batch(batch, need_indices=True)
        if self._check_batches:
            self._validate_indices(indices)
        if self._records_labels:
            self._record_labels(targets, indices)
        outputs = self.backbone(inputs)
        if self.current_epoch < self.warmup_epochs:
            losses = self._per_sample(outputs, targets)
            if self._check_batches:
                self._validate_losses(losses)
            # Zero-weighted use of the mask: DDP expects a gradient for every trainable parameter on
            # every step. The zero gradient leaves the mask where it is (no weight decay, no momentum).
            loss = losses.mean() + 0.0 * self.mask[indices].sum()
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return {"loss": loss, "logits": outputs}

        terms = self.loss_terms(outputs, targets, indices)
        if self._check_batches:
            self._validate_losses(terms["sample_loss"])
        kept = terms["kept_fraction"]
        with torch.no_grad():
            self._alpha.copy_(terms["alpha"])
            self._lambda.copy_(terms["lambda"])
            self._mask_steps += 1
            if self.alpha_schedule == "step":
                advance = torch.ones_like(self._alpha_progress)
                if self.pause_alpha_below_target:
                    advance = (kept >= self.keep_ratio).long()
                self._alpha_progress += advance
        self.log("train_loss", terms["loss"], on_step=True, on_epoch=True)
        # Each self.log call costs about a millisecond of Python; six per step would dominate a small
        # model's step. The terms are summed on the device and logged per step only where a logger
        # records that step, and as epoch means at the end of the epoch.
        values = torch.stack([terms[name].detach().float() for name in _TERMS.values()])
        self._term_sums = values + (self._term_sums if self._term_sums is not None else 0.0)
        self._term_count += 1
        connector = getattr(self.trainer, "_logger_connector", None)  # Lightning's own "log this step?"
        if self.trainer.loggers and getattr(connector, "should_update_logs", True):
            self.log_dict({f"{key}_step": value for key, value in zip(_TERMS, values)}, on_step=True, on_epoch=False)
        return {"loss": terms["loss"], "logits": outputs}

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

    @property
    def frozen(self) -> bool:
        """Whether the mask has reached the target and stopped training (``stop_at_target``)."""
        return bool(self._frozen)

    def on_train_epoch_end(self) -> None:
        # Every sample has now been seen once, so index and loss checks of later epochs would only
        # cost host synchronisations.
        self._check_batches = False
        if not torch.isfinite(self.mask.detach()).all():
            raise FloatingPointError(
                "The AdaPruner mask holds NaN or inf values, so the losses diverged. Lower mask_lr or lr, or "
                "check per_sample_loss for NaN/inf (it must be finite and >= 0)."
            )
        if self._records_labels:
            self._merge_seen_labels()
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

    # ------------------------------------------------------------------ validation (model selection)
    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # Reported only: nothing in AdaPruner reads test metrics, so the test set never selects a mask.
        self._evaluate(batch, "test")

    def _evaluate(self, batch: Any, stage: str) -> None:
        inputs, targets, _ = self._split_batch(batch, need_indices=False)
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
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        else:
            optimizer = self.optimizer_factory(groups)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(f"optimizer must return a torch.optim.Optimizer, got {type(optimizer).__name__}.")
            for group in optimizer.param_groups:
                if any(p is self.mask for p in group["params"]) and group.get("weight_decay", 0.0):
                    raise ValueError(
                        "The optimizer applies weight decay to the AdaPruner mask; keep the mask group's "
                        "'weight_decay': 0.0 (decay would drag every sample towards being pruned)."
                    )
        if self.lr_scheduler_factory is None:
            return optimizer
        if self.lr_scheduler_factory == "cosine":
            total = max(int(self.trainer.estimated_stepping_batches), 1)

            def cosine(step: int) -> float:
                return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

            lambdas = [
                cosine if group.get("name") == "backbone" else (lambda step: 1.0) for group in optimizer.param_groups
            ]
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = self.lr_scheduler_factory(optimizer)
        if isinstance(scheduler, Mapping):
            return {"optimizer": optimizer, "lr_scheduler": dict(scheduler)}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        best = None
        if self._best is not None:
            best = {k: v for k, v in self._best.items()}
        checkpoint[_CHECKPOINT_KEY] = {
            "seen_labels": self._seen_labels.detach().cpu().clone(),
            "converged_epoch": self._converged_epoch,
            "best": best,
            "num_samples": self.num_samples,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(_CHECKPOINT_KEY)
        if state is None:
            return
        if state.get("num_samples") != self.num_samples:
            raise ValueError(
                f"This checkpoint's AdaPruner has a mask for {state.get('num_samples')} samples, this one for "
                f"{self.num_samples}. Build AdaPruner with num_samples={state.get('num_samples')} to resume it."
            )
        self._seen_labels = state["seen_labels"].to(self._seen_labels.device)
        self._converged_epoch = state.get("converged_epoch")
        self._best = state.get("best")

    # ------------------------------------------------------------------ the result
    def selection(self, which: Literal["last", "best"] = "last") -> Selection:
        """The kept samples as a :class:`~lightning_prune.Selection` (keep ``i`` iff ``m_i > 0``).

        ``which="last"`` binarises the current mask; ``which="best"`` returns the mask of the epoch
        with the best validation metric (``best_by``) among those within tolerance of the target.
        """
        _check_choice("which", which, ("last", "best"))
        if int(self._mask_steps) == 0:
            raise RuntimeError(
                "AdaPruner has not trained its mask yet: run trainer.fit(pruner, ...) with more epochs than "
                "warmup_epochs (the mask is frozen during warm-up)."
            )
        extra: dict[str, Any] = {}
        if which == "last":
            keep = (self.mask.detach() > 0).cpu().numpy()
            alpha_reached = self.alpha
        else:
            if self._best is None:
                raise RuntimeError(
                    "No best mask: it is chosen at validation time among epochs whose kept fraction is within "
                    f"{self.tolerance:g} of {self.keep_ratio:g}, and no such validated epoch exists. Pass a "
                    "validation dataloader to fit(), train longer, or use selection('last')."
                )
            keep = self._best["keep"].numpy()
            alpha_reached = self._best["alpha"]
            extra = {
                "best_epoch": self._best["epoch"],
                "best_metric": self._best["metric"],
                "best_value": self._best["value"],
            }
        indices = np.flatnonzero(keep)
        if indices.size == 0:
            raise RuntimeError(
                "The AdaPruner mask keeps no sample. Lower mask_lr, raise keep_ratio, or train longer so that "
                "the compression term can pull the kept fraction back to the target."
            )
        reached = float(keep.mean())
        epochs = int(self._epochs_started)
        hparams = {
            "keep_ratio": self.keep_ratio,
            "keep_ratio_reached": reached,
            "tolerance": self.tolerance,
            "converged": abs(reached - self.keep_ratio) <= self.tolerance + 1e-12,
            "alpha": list(self.alpha_range),
            "alpha_reached": alpha_reached,
            "alpha_schedule": self.alpha_schedule,
            "pause_alpha_below_target": self.pause_alpha_below_target,
            "lambda_rule": self.lambda_rule,
            "lambda_scale": self.lambda_scale,
            "mask_lr": self.mask_lr,
            "stop_at_target": self.stop_at_target,
            "frozen": self.frozen,
            "epochs": epochs,
            "warmup_epochs": self.warmup_epochs,
            "mask_epochs": max(epochs - self.warmup_epochs, 0),
            "mask_steps": int(self._mask_steps),
            "mask": which,
            **extra,
        }
        return Selection(
            indices=indices,
            num_samples=self.num_samples,
            method="adapruner",
            hparams=hparams,
            label_fingerprint=label_fingerprint(self.labels),
        )

    @property
    def labels(self) -> np.ndarray | None:
        """The training labels in index order: given as ``labels=``, or recorded in training once every
        index was seen with an integer target (``None`` otherwise)."""
        if self._given_labels is not None:
            return self._given_labels
        seen = self._seen_labels.detach().cpu().numpy()
        if seen.size == 0 or (seen < 0).any():
            return None
        return seen

    # ------------------------------------------------------------------ batches
    def _split_batch(self, batch: Any, need_indices: bool) -> tuple[Any, Tensor, Tensor | None]:
        # Not lightning_prune.unpack_batch: that one insists on integer class targets, and AdaPruner's
        # per-sample loss may be a regression loss with float targets.
        if isinstance(batch, Mapping):
            index_key = next((k for k in INDEX_KEYS if k in batch), None)
            target_key = next((k for k in TARGET_KEYS if k in batch), None)
            input_key = next((k for k in INPUT_KEYS if k in batch), None)
            if target_key is None:
                raise ValueError(
                    f"dict batch has no target key (one of {list(TARGET_KEYS)}); got keys {sorted(batch)}."
                )
            inputs = batch[input_key] if input_key is not None else batch
            targets = batch[target_key]
            indices = batch[index_key] if index_key is not None else None
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            inputs, targets = batch[0], batch[1]
            indices = batch[2] if len(batch) >= 3 else None
        else:
            raise ValueError(
                f"AdaPruner expects batches (x, y, index) or dicts with input, target and index keys, got "
                f"{type(batch).__name__}."
            )
        if indices is None:
            if need_indices:
                raise ValueError(
                    "AdaPruner's training batches must carry sample indices: the mask has one entry per sample. "
                    "Wrap the training set with lightning_prune.IndexedDataset so items become (x, y, index), or "
                    f"add an index key (one of {list(INDEX_KEYS)}) to dict batches."
                )
            return inputs, targets, None
        indices = indices if isinstance(indices, Tensor) else torch.as_tensor(indices)
        if indices.is_floating_point() or indices.is_complex():
            raise TypeError(f"batch indices must be integers, got dtype {indices.dtype}.")
        return inputs, targets, indices.reshape(-1).to(self.mask.device)

    def _validate_indices(self, indices: Tensor) -> None:
        if indices.numel() == 0:
            return
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= self.num_samples:
            raise ValueError(
                f"A batch holds sample index {high if high >= self.num_samples else low}, outside the mask's range "
                f"[0, {self.num_samples}). Set AdaPruner(num_samples=...) to the size of the full training set "
                "the indices refer to."
            )

    def _validate_losses(self, losses: Tensor) -> None:
        if not torch.isfinite(losses).all():
            raise FloatingPointError(
                "per_sample_loss returned NaN or inf. Check the inputs and the backbone's outputs, or lower lr."
            )
        if (losses < 0).any():
            raise ValueError(
                "per_sample_loss returned negative values; AdaPruner's selection term takes log(loss), so the "
                "per-sample loss must be >= 0 (e.g. cross-entropy, squared error)."
            )

    def _record_labels(self, targets: Any, indices: Tensor) -> None:
        if (
            not isinstance(targets, Tensor)
            or targets.is_floating_point()
            or targets.is_complex()
            or targets.dim() != 1
            or targets.shape[0] != indices.shape[0]
        ):
            # Not class labels (regression, multi-label, ...): there is no label fingerprint to keep.
            self._records_labels = False
            self._seen_labels.fill_(-1)
            return
        if self._seen_labels.device != indices.device:
            self._seen_labels = self._seen_labels.to(indices.device)
        self._seen_labels[indices] = targets.to(self._seen_labels.device, torch.long)

    def _merge_seen_labels(self) -> None:
        if self.trainer.world_size > 1:
            gathered = self.all_gather(self._seen_labels)
            if gathered.dim() == 2:
                self._seen_labels = gathered.max(dim=0).values.to(self._seen_labels.device)


# ---------------------------------------------------------------------- helpers
def _is_classification(outputs: Any, targets: Any) -> bool:
    return (
        isinstance(outputs, Tensor)
        and isinstance(targets, Tensor)
        and outputs.dim() == 2
        and targets.dim() == 1
        and not targets.is_floating_point()
        and outputs.shape[0] == targets.shape[0]
    )


def _check_fraction(name: str, value: Any, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in (0, 1), {hint}; got {value!r}.")
    value = float(value)
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1 ({hint}); got {value!r}.")
    return value


def _check_alpha(alpha: Any) -> tuple[float, float]:
    try:
        start, end = (float(a) for a in alpha)
    except (TypeError, ValueError):
        raise ValueError(
            f"alpha must be a pair (start, end) of positive numbers, e.g. (0.1, 5.0); got {alpha!r}."
        ) from None
    if not (math.isfinite(start) and math.isfinite(end)) or start <= 0 or end < start:
        raise ValueError(
            f"alpha must be (start, end) with 0 < start <= end, e.g. (0.1, 5.0); got {alpha!r}. alpha sharpens "
            "sigmoid(alpha * m) over training, so it must not decrease."
        )
    return start, end


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _extract_state_dict(loaded: Any) -> dict[str, Tensor]:
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not loaded or not all(isinstance(v, Tensor) for v in loaded.values()):
        keys = sorted(loaded)[:10] if isinstance(loaded, Mapping) else type(loaded).__name__
        raise ValueError(
            f"The checkpoint is neither a state_dict nor a Lightning checkpoint with a 'state_dict' entry "
            f"(top-level: {keys}). Pass the backbone's state_dict itself, e.g. checkpoint=saved['net']."
        )
    return dict(loaded)


def _match_prefix(state: dict[str, Tensor], backbone: nn.Module, prefix: str | None, strict: bool) -> dict[str, Tensor]:
    wanted = set(backbone.state_dict())
    if prefix is not None:
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not stripped:
            raise ValueError(f"No checkpoint key starts with prefix {prefix!r}; keys look like {sorted(state)[:5]}.")
        return stripped
    if wanted <= set(state):
        return {k: v for k, v in state.items() if k in wanted}
    # A Lightning checkpoint stores the backbone under the attribute name it had in its module:
    # find the prefix that, stripped, yields the backbone's own keys.
    counts: dict[str, int] = {}
    for key in state:
        for cut in range(len(key)):
            if (cut == 0 or key[cut - 1] == ".") and key[cut:] in wanted:
                counts[key[:cut]] = counts.get(key[:cut], 0) + 1
    best = max(counts, key=lambda p: counts[p], default=None)
    if best is None or (strict and counts[best] < len(wanted)):
        raise ValueError(
            "The checkpoint's keys do not match the backbone's (e.g. checkpoint "
            f"{sorted(state)[:3]} vs backbone {sorted(wanted)[:3]}). Pass prefix='...' naming the part of the "
            "checkpoint keys before the backbone's own names, or strict=False."
        )
    return {k[len(best):]: v for k, v in state.items() if k.startswith(best) and k[len(best):] in wanted}
