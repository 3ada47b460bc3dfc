"""AdaPruner's schedules: the sigmoid sharpness ``alpha``, the compression weight ``lambda``, the learning rate.

They are pure functions of the run's plan (epochs, steps, batches per epoch) and of the mask's kept
fraction, apart from the LightningModule, so that each rule can be read on its own and checked
without a Trainer. The module keeps the state they read (progress counters in buffers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

AlphaSchedule = Literal["step", "epoch"]
LambdaRule = Literal["official", "paper"]


def default_lambda_scale(rule: LambdaRule) -> float:
    """The scale of ``|r - c|`` in ``lambda``: 50 in the official code, ``s = 100`` in the paper."""
    return 50.0 if rule == "official" else 100.0


def lambda_weight(kept: Tensor, keep_ratio: float, rule: LambdaRule, scale: float) -> Tensor:
    """``lambda`` for the hard kept fraction ``kept``: ``1 + scale * |r - c|`` (official) or ``scale * |r - c|``."""
    base = 1.0 if rule == "official" else 0.0
    return base + scale * (kept - keep_ratio).abs()


def scheduled_alpha(alpha: tuple[float, float], progress: Tensor, length: int) -> Tensor:
    """``alpha`` after ``progress`` of ``length`` schedule units: linear from ``alpha[0]``, held at ``alpha[1]``."""
    start, end = alpha
    fraction = torch.clamp(progress.float() / max(length, 1), max=1.0)
    return start + (end - start) * fraction


def alpha_step_advance(kept: Tensor, keep_ratio: float, pause_below_target: bool) -> Tensor:
    """How far one mask step moves a per-step ``alpha`` schedule (0 or 1, a device tensor: no host sync)."""
    if pause_below_target:
        # Holding alpha below the target keeps sigma soft, so that the mask can still recover samples.
        return (kept >= keep_ratio).long()
    return torch.ones((), dtype=torch.long, device=kept.device)


def schedule_length(
    alpha_schedule: AlphaSchedule,
    warmup_epochs: int,
    *,
    max_epochs: int | None,
    max_steps: int | None,
    batches_per_epoch: float,
    accumulate_grad_batches: int,
) -> int:
    """Schedule units (mask steps, or mask epochs after the first) over which ``alpha`` ramps up.

    ``max_epochs`` / ``max_steps`` are ``None`` when unlimited; ``batches_per_epoch`` is ``inf`` for a
    loader without a length. Raises when the run has no finite end to lay the ramp out on.
    """
    if alpha_schedule == "epoch":
        epochs = max_epochs
        if max_steps is not None and math.isfinite(batches_per_epoch) and batches_per_epoch > 0:
            by_steps = math.ceil(max_steps * accumulate_grad_batches / batches_per_epoch)
            epochs = by_steps if epochs is None else min(epochs, by_steps)
        if epochs is None:
            raise ValueError(
                "alpha_schedule='epoch' needs a finite number of epochs: set Trainer(max_epochs=...) or max_steps."
            )
        return max(epochs - warmup_epochs - 1, 1)
    if not math.isfinite(batches_per_epoch):
        if max_steps is None:
            raise ValueError(
                "The training dataloader has no length, so the alpha schedule cannot be laid out: set "
                "Trainer(max_steps=...) or give the dataloader a length."
            )
        return max(max_steps * accumulate_grad_batches - 1, 1)
    total = batches_per_epoch * max_epochs if max_epochs is not None else None
    if max_steps is not None:
        capped = max_steps * accumulate_grad_batches
        total = capped if total is None else min(total, capped)
    if total is None:
        raise ValueError("AdaPruner needs a finite run to schedule alpha: set Trainer(max_epochs=...) or max_steps.")
    return max(int(total - warmup_epochs * batches_per_epoch) - 1, 1)


def cosine_lr_lambdas(group_names: list[str | None], total_steps: int) -> list[Callable[[int], float]]:
    """``LambdaLR`` factors: cosine to 0 over ``total_steps`` for the backbone group, constant for the rest.

    The mask's learning rate stays constant so that the mask can still reach its target late in training.
    """
    total = max(total_steps, 1)

    def cosine(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    def constant(step: int) -> float:
        return 1.0

    return [cosine if name == "backbone" else constant for name in group_names]
