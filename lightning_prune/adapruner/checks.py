"""AdaPruner's checks of its arguments, batches, losses and optimiser; each error names the value and the fix.

Apart from the LightningModule so that its constructor and training step read as what they build
and compute; every check here raises before a bad value can silently shape the mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from lightning_prune.adapruner.schedule import default_lambda_scale


class CheckedArguments(NamedTuple):
    """The constructor arguments that checking normalises (types, defaults)."""

    keep_ratio: float
    tolerance: float
    alpha: tuple[float, float]
    lambda_scale: float


def check_arguments(
    backbone: Any,
    num_samples: Any,
    keep_ratio: Any,
    alpha: Any,
    *,
    alpha_schedule: Any,
    lambda_rule: Any,
    lambda_scale: Any,
    tolerance: Any,
    warmup_epochs: Any,
    per_sample_loss: Any,
    lr: Any,
    mask_lr: Any,
    lr_scheduler: Any,
    best_by: Any,
) -> CheckedArguments:
    """Check :class:`~lightning_prune.adapruner.AdaPruner`'s arguments; return the normalised ones."""
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(
            f"num_samples must be a positive integer (the size of the full training set), got {num_samples!r}. "
            "Pass num_samples=len(train_set)."
        )
    keep_ratio = check_fraction("keep_ratio", keep_ratio, "the fraction of samples to KEEP, e.g. 0.7")
    tolerance = check_fraction("tolerance", tolerance, "e.g. 0.02 for the paper's 2%")
    alpha = check_alpha(alpha)
    check_choice("alpha_schedule", alpha_schedule, ("step", "epoch"))
    check_choice("lambda_rule", lambda_rule, ("official", "paper"))
    check_choice("best_by", best_by, ("val_loss", "val_acc"))
    if lambda_scale is None:
        lambda_scale = default_lambda_scale(lambda_rule)
    for name, value in (("lambda_scale", lambda_scale), ("mask_lr", mask_lr), ("lr", lr)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if not isinstance(warmup_epochs, int) or isinstance(warmup_epochs, bool) or warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}.")
    if per_sample_loss is not None and not callable(per_sample_loss):
        raise TypeError("per_sample_loss must be a callable (outputs, targets) -> Tensor[B].")
    if not (lr_scheduler is None or lr_scheduler == "cosine" or callable(lr_scheduler)):
        raise ValueError(f"lr_scheduler must be 'cosine', None or a callable, got {lr_scheduler!r}.")
    return CheckedArguments(keep_ratio, tolerance, alpha, float(lambda_scale))


def check_fraction(name: str, value: Any, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in (0, 1), {hint}; got {value!r}.")
    value = float(value)
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1 ({hint}); got {value!r}.")
    return value


def check_alpha(alpha: Any) -> tuple[float, float]:
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


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def check_labels(labels: Sequence[int] | np.ndarray | Tensor | None, num_samples: int) -> np.ndarray | None:
    """The given training labels as int64, one per sample in index order (``None`` if not given)."""
    if labels is None:
        return None
    given = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if given.shape != (num_samples,):
        raise ValueError(
            f"labels has shape {given.shape}, but num_samples={num_samples}: pass one label per training sample, "
            "in index order."
        )
    if given.size and not np.issubdtype(given.dtype, np.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {given.dtype}.")
    return given.astype(np.int64)


def check_indices(indices: Tensor, num_samples: int) -> None:
    """Every batch index lies in the mask's range (a host sync: first epoch only)."""
    if indices.numel() == 0:
        return
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= num_samples:
        raise ValueError(
            f"A batch holds sample index {high if high >= num_samples else low}, outside the mask's range "
            f"[0, {num_samples}). Set AdaPruner(num_samples=...) to the size of the full training set the "
            "indices refer to."
        )


def check_loss_shape(losses: Any, targets: Any) -> Tensor:
    """``per_sample_loss``'s result as float32, after checking that it holds one loss per sample."""
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


def check_loss_values(losses: Tensor) -> None:
    """The per-sample losses are finite and >= 0 (host syncs: first epoch only)."""
    if not torch.isfinite(losses).all():
        raise FloatingPointError(
            "per_sample_loss returned NaN or inf. Check the inputs and the backbone's outputs, or lower lr."
        )
    if (losses < 0).any():
        raise ValueError(
            "per_sample_loss returned negative values; AdaPruner's selection term takes log(loss), so the "
            "per-sample loss must be >= 0 (e.g. cross-entropy, squared error)."
        )


def check_optimizer(optimizer: Any, mask: Tensor) -> torch.optim.Optimizer:
    """A user optimiser is an ``Optimizer`` and leaves the mask without weight decay."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must return a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    for group in optimizer.param_groups:
        if any(p is mask for p in group["params"]) and group.get("weight_decay", 0.0):
            raise ValueError(
                "The optimizer applies weight decay to the AdaPruner mask; keep the mask group's "
                "'weight_decay': 0.0 (decay would drag every sample towards being pruned)."
            )
    return optimizer


def check_finite_mask(mask: Tensor) -> None:
    if not torch.isfinite(mask.detach()).all():
        raise FloatingPointError(
            "The AdaPruner mask holds NaN or inf values, so the losses diverged. Lower mask_lr or lr, or "
            "check per_sample_loss for NaN/inf (it must be finite and >= 0)."
        )
