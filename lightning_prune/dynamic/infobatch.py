"""``InfoBatch``: dynamic data pruning inside the fit a user already runs (Qin et al., ICLR 2024).

Every sample keeps its latest training loss. At the start of each epoch, the samples whose loss is
below the mean loss are *well learned*; each of them is left out of this epoch with probability
``prune_ratio``, and the well-learned samples that stay get loss weight ``1 / (1 - prune_ratio)``,
so that the epoch's expected gradient is the full data's. All other samples are served with
weight 1. The last epochs (from ``floor(delta * num_epochs)`` on) train on the full data with
weight 1 ("annealing"), which the paper finds necessary to lose no accuracy.

How it maps onto Lightning:

* the losses are a collector's per-sample state (:class:`~lightning_prune.ScoreCollector`): written
  on the device in ``on_train_batch_end`` without a host synchronisation, exchanged across DDP
  ranks at the end of every epoch (so every rank plans the same epoch), and checkpointed, so a
  resumed fit plans exactly the epochs an uninterrupted one would; a checkpoint taken inside an epoch
  also holds that epoch's plan and how many of its batches ran, and the resumed epoch serves exactly
  the rest (:mod:`lightning_prune.dynamic.resume`);
* each epoch's plan is drawn from ``numpy.random.default_rng([seed, epoch])`` when the training
  loader asks for it (:class:`~lightning_prune.dynamic.loader.DynamicSampler`), and the weights travel
  with the sample indices to the dataset (so worker processes see them too);
* the epoch length changes, so Lightning must rebuild the training loader every epoch
  (``reload_dataloaders_every_n_epochs=1``, set by this callback when it is 0), and a step-based
  learning-rate schedule must follow the training progress instead of a step count fixed up front
  (:func:`~lightning_prune.models.schedules.progress_cosine`, stepped per optimiser step;
  :func:`~lightning_prune.cosine_schedule` gives it to any model's
  ``configure_optimizers``, and :class:`~lightning_prune.Classifier` uses it). A step-counted
  ``CosineAnnealingLR`` / ``OneCycleLR`` / ``PolynomialLR`` stepped per step is refused.

What is checked, so that misuse does not pass silently: the loss ``training_step`` returns must
scale with the batch's weights (checked once per fit, on the first batch, by autograd: a model that
ignores the weights or normalises them away, ``sum(w * l) / sum(w)``, is refused); the wrapped data
module must be fitted with this callback; ``loss_fn`` must return one finite loss per sample
(non-finite ones fail at the epoch's end, naming the samples); the fit must be long enough to prune
(and is warned when it stops before annealing); ``max_steps``, an integer ``val_check_interval`` and
step-counted schedules, which assume epochs of a fixed length, are refused where they would go wrong.

Where the official code (NUS-HPC-AI-Lab/InfoBatch) differs and this library does what the paper
describes:

* the annealing epochs train on the full data with weight 1. The official sampler resets the
  weights only when its epoch count equals ``delta * num_epochs + 1`` exactly, so when
  ``delta * num_epochs`` is not a whole number (e.g. 0.875 x 10 epochs) the annealing epochs keep
  the last pruned epoch's ``1 / (1 - prune_ratio)`` on the samples it kept;
* the random draws come from a generator seeded by ``(seed, epoch)`` instead of NumPy's global
  seed, so plans differ draw for draw but follow the same rule; samples never seen have no loss and
  count as not well learned (the official code starts every loss at 3, which has the same effect in
  the first epoch).

The saving over a long run: a pruned epoch skips ``prune_ratio`` of the samples below the mean loss
and only ``floor(delta * num_epochs)`` epochs (less the first, which has no losses yet) are pruned,
so the fraction of all presentations skipped approaches ``delta x prune_ratio x (share below the
mean)``, not ``prune_ratio x share``.

``target_saving=`` asks for the fraction of all sample presentations of the fit to skip instead
(:mod:`lightning_prune.dynamic.target`). Only epochs ``1 .. floor(delta * num_epochs) - 1`` can skip
(epoch 0 has no losses, the rest anneal), so each of them skips an even share of
``round(target_saving x N x num_epochs)`` samples, less what the earlier ones skipped
(:func:`~lightning_prune.dynamic.target.epoch_share`): it leaves out exactly that many of the
well-learned samples, uniformly, and weights the kept well-learned ones ``c / (c - skipped)`` (``c``
of them; the per-epoch ``prune_ratio`` is ``skipped / c``). That weight is bounded by ``max_weight``
(default :data:`TARGET_MAX_WEIGHT`, 2: the paper's ratio 0.5): when the share exceeds ``1 - 1 /
max_weight`` of the samples below the mean, the candidates extend from the samples below the mean to
the lowest-loss ``ceil(skipped x max_weight / (max_weight - 1))`` known samples (a departure from the
paper, which only prunes below the mean; the weights keep the epoch's expected gradient); when even
every known sample as a candidate would need more, all of them are candidates, drawn uniformly, and
weigh ``max_weight``: the epoch's expected gradient is then the full data's scaled down alike for
every known sample (a shorter step, not a bias between samples). Every epoch's count is exact, so
the fit ends on its target to within a sample per epoch; an epoch skips at most 0.9 of its known
samples, so a target above ``0.9 x (floor(delta x num_epochs) - 1) / num_epochs`` cannot be met and
is refused when the fit starts (raise ``delta``, train longer or lower the target). The counts are
kept in ``state_dict()``, so a resumed fit plans the same epochs; :attr:`~InfoBatch.fraction_skipped`
reports what was reached.

Why the bound: a target must come from the pruned epochs only (a 50% target over 8 epochs is 67% of
each of the 6 that prune), and unbounded, the kept samples would weigh up to 10x. On a CIFAR-shaped
ResNet-18 trained 8 epochs on the CPU (docs/benchmarks.md, 1 seed) a 50% target ended at 32% test
accuracy with weights up to 10x and at 29% with weights up to 4x, against 95.7% with the bound of 2
and 96.9% for the full data trained for as many samples; on the study's data sets (3 seeds, 50%) the
bound of 2 tied the unbounded plan on digits' validation split, was 2.4 points above it on tabular and
2.5 below it on digits with 20% of the labels flipped (where heavy weights on the easy, correctly
labelled samples help). A plan above :data:`HEAVY_WEIGHT` (only with a ``max_weight``
above it) is warned about once per fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.base import BatchAdapter, BatchView, ScoreCollector
from lightning_prune.collectors.state import PerSample
from lightning_prune.data.indexed import carried_weights
from lightning_prune.dynamic.losses import (
    FROM_TRAINING_STEP,
    LOSS_SOURCES,
    PER_SAMPLE_LOSS,
    LossView,
    PerSampleLossReader,
)
from lightning_prune.dynamic.resume import MidEpochResume
from lightning_prune.dynamic.target import check_target_saving, epoch_share, refuse_both, report_saving
from lightning_prune.models.schedules import check_progress_schedules, fixed_length_step_schedules
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.strategies import check_prune_ratio, check_seed
from lightning_prune.trainer_access import (
    accumulated_batches,
    fit_epoch,
    limited_train_batches,
    reload_dataloaders_every,
    reload_train_loader_every_epoch,
    val_check_settings,
)

if TYPE_CHECKING:
    from lightning_prune.dynamic.loader import DynamicSampler

MAX_PRUNE_RATIO = 0.9
"""Above it the kept well-learned samples' weight would exceed 10 (the official code caps it there too)."""

TARGET_MAX_WEIGHT = 2.0
"""The default ``max_weight`` of a ``target_saving`` plan: the weight of the paper's ``prune_ratio`` 0.5.

Measured (module docs, docs/benchmarks.md): unbounded weights wrecked a ResNet-18 fit (32% test accuracy)
that this bound kept within 1.2 points of the full data trained for as many samples."""

HEAVY_WEIGHT = TARGET_MAX_WEIGHT
"""A ``target_saving`` plan weighing kept samples above this (possible only with a larger ``max_weight``) is
warned about once per fit: on a CIFAR-shaped ResNet-18 trained for 8 epochs on the CPU (docs/benchmarks.md),
a 50% target reached 32% test accuracy with weights up to 10x and 29% with weights up to 4x, against 97%
for the full data trained for the same samples."""

DEFAULT_PRUNE_RATIO = 0.5
"""The paper's ``prune_ratio``, used when neither it nor ``target_saving`` is given."""

LossFunction = Callable[[Tensor, Tensor], Tensor]


def per_sample_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits, targets, reduction="none")


@dataclass(frozen=True)
class EpochPlan:
    """The samples one epoch serves and the loss weight of each.

    Attributes:
        indices: sample indices into the full training set, in pool order.
        weights: ``float32`` loss weight per served sample (1, or ``1 / (1 - prune_ratio)``).
        pool_size: how many samples the epoch could have served.
    """

    indices: np.ndarray
    weights: np.ndarray
    pool_size: int

    @property
    def skipped(self) -> int:
        return self.pool_size - int(self.indices.size)


def infobatch_target_plan(
    pool: np.ndarray,
    losses: np.ndarray,
    known: np.ndarray,
    skip: int,
    rng: np.random.Generator,
    max_weight: float = TARGET_MAX_WEIGHT,
) -> EpochPlan:
    """One pruned epoch of InfoBatch over ``pool`` that leaves out exactly ``skip`` samples (``target_saving``).

    The candidates are the known samples below the mean known loss, extended to the lowest-loss
    ``ceil(skip x max_weight / (max_weight - 1))`` known samples when ``skip`` exceeds ``1 - 1 /
    max_weight`` of them (every known sample at most); ``c - skip`` of the ``c`` candidates are kept,
    drawn uniformly without replacement, with weight ``min(c / (c - skip), max_weight)``. ``skip`` is
    lowered to what the ratio bound allows (``floor(0.9 x`` the known samples``)``) when it asks for more.
    """
    pool = np.asarray(pool, dtype=np.int64)
    weights = np.ones(pool.size, dtype=np.float32)
    known_count = int(known.sum())
    skip = min(int(skip), math.floor(MAX_PRUNE_RATIO * known_count + 1e-9))
    if skip <= 0:
        return EpochPlan(pool, weights, pool.size)
    losses = np.asarray(losses, dtype=np.float64)
    below = int((known & (losses < losses[known].mean())).sum())
    # the fewest candidates whose kept share c / (c - skip) stays within max_weight (all known at weight 1)
    within_bound = known_count if max_weight <= 1.0 else math.ceil(skip * max_weight / (max_weight - 1.0) - 1e-9)
    count = min(known_count, max(below, within_bound))
    # known samples from the lowest loss up: the first `below` of them are exactly those below the mean
    order = np.flatnonzero(known)[np.argsort(losses[known], kind="stable")]
    candidates = np.sort(order[:count])
    kept = rng.choice(candidates, count - skip, replace=False)
    served = np.ones(pool.size, dtype=bool)
    served[candidates] = False
    served[kept] = True
    weights[kept] = min(count / (count - skip), max_weight)
    return EpochPlan(pool[served], weights[served], pool.size)


def infobatch_plan(
    pool: np.ndarray, losses: np.ndarray, known: np.ndarray, prune_ratio: float, rng: np.random.Generator
) -> EpochPlan:
    """One pruned epoch of InfoBatch over ``pool``.

    Args:
        pool: the sample indices the epoch draws from.
        losses: each pool sample's latest loss (aligned with ``pool``).
        known: whether the sample has a loss yet; unknown ones are never well learned.
        prune_ratio: probability of leaving a well-learned sample out.
        rng: the epoch's generator.

    The mean is taken over the known losses of the pool; ``int((1 - prune_ratio) * n)`` of the
    ``n`` well-learned samples are kept, drawn without replacement, as the official code does.
    """
    pool = np.asarray(pool, dtype=np.int64)
    weights = np.ones(pool.size, dtype=np.float32)
    if not known.any() or prune_ratio == 0.0:
        return EpochPlan(pool, weights, pool.size)
    losses = np.asarray(losses, dtype=np.float64)
    well_learned = known & (losses < losses[known].mean())
    candidates = np.flatnonzero(well_learned)
    keep_ratio = 1.0 - prune_ratio
    kept = rng.choice(candidates, int(keep_ratio * candidates.size), replace=False)
    served = ~well_learned
    served[kept] = True
    weights[kept] = 1.0 / keep_ratio
    return EpochPlan(pool[served], weights[served], pool.size)


WEIGHT_SCALING_FLOOR = 0.1
"""Below it, ``d loss / d weight . weight`` (``loss`` for ``mean(weight * per_sample_loss)``, 0 for a
loss that ignores or normalises the weights) says the weights do not scale the loss."""

WEIGHT_CHECK_ATTEMPTS = 3
"""Batches the weight check may look at before giving up (only a loss of exactly 0 leaves it undecided)."""


def _check_ratio(prune_ratio: Any) -> float:
    message = (
        f"InfoBatch prune_ratio={prune_ratio!r} must lie in (0, {MAX_PRUNE_RATIO}]: it is the probability of "
        "skipping a well-learned sample, and the kept ones are weighted 1 / (1 - prune_ratio). To train without "
        "pruning, leave InfoBatch out."
    )
    if isinstance(prune_ratio, (bool, np.bool_, str)):
        raise TypeError(message)
    try:
        ratio = check_prune_ratio(prune_ratio)
    except (TypeError, ValueError) as error:
        raise type(error)(message) from None
    if ratio > MAX_PRUNE_RATIO:
        raise ValueError(message)
    return ratio


def _check_max_weight(max_weight: Any, target_saving: float | None) -> float | None:
    """``max_weight`` as a ``target_saving`` plan uses it (``None`` without a target: the ratio sets the weight)."""
    if target_saving is None:
        if max_weight is not None:
            raise ValueError(
                f"InfoBatch max_weight={max_weight!r} bounds the weights of a target_saving plan; with prune_ratio "
                "the kept samples weigh 1 / (1 - prune_ratio). Pass target_saving=..., or leave max_weight out."
            )
        return None
    if max_weight is None:
        return TARGET_MAX_WEIGHT
    message = (
        f"InfoBatch max_weight={max_weight!r} must be a number in [1, {1 / (1 - MAX_PRUNE_RATIO):g}]: the largest loss "
        f"weight a target_saving plan gives the samples it keeps (default {TARGET_MAX_WEIGHT:g}, the paper's ratio "
        "0.5; 1 skips without reweighting)."
    )
    if isinstance(max_weight, (bool, np.bool_)) or not isinstance(max_weight, (int, float, np.integer, np.floating)):
        raise TypeError(message)
    if not 1.0 <= float(max_weight) <= 1.0 / (1.0 - MAX_PRUNE_RATIO) + 1e-9:
        raise ValueError(message)
    return float(max_weight)


def _check_delta(delta: Any, owner: str = "InfoBatch") -> float:
    message = (
        f"{owner} delta={delta!r} must lie in (0, 1]: the first floor(delta * num_epochs) epochs are pruned, "
        "the rest train on the full data (the paper's default 0.875)."
    )
    if isinstance(delta, (bool, np.bool_)) or not isinstance(delta, (int, float, np.integer, np.floating)):
        raise TypeError(message)
    if not 0.0 < float(delta) <= 1.0:
        raise ValueError(message)
    return float(delta)


def _check_num_epochs(num_epochs: Any, owner: str = "InfoBatch") -> int:
    message = f"{owner} num_epochs={num_epochs!r} must be a positive integer or None (Trainer.max_epochs)."
    if isinstance(num_epochs, (bool, np.bool_)) or not isinstance(num_epochs, (int, np.integer)):
        raise TypeError(message)
    if num_epochs < 1:
        raise ValueError(message)
    return int(num_epochs)


def _loss_shape_hint(shape: tuple[int, ...], batch: int) -> str:
    if len(shape) == 0:
        return "it is a batch mean (or sum)"
    if shape == (batch, 1):
        return "squeeze the trailing dimension (loss.squeeze(1))"
    if len(shape) == 2 and shape[0] == batch:
        return "reduce it over the classes per sample (e.g. .sum(dim=1))"
    return "it is not one value per sample"


class InfoBatch(ScoreCollector):
    """Dynamic pruning callback: skip well-learned samples each epoch, rescale the rest (see the module docs).

    Use it with the data module it plans for::

        infobatch = lp.InfoBatch(prune_ratio=0.5)
        trainer = pl.Trainer(max_epochs=30, callbacks=[infobatch])
        trainer.fit(model, datamodule=infobatch.wrap(dm))   # dm may be a PrunedDataModule

    Training batches then carry each sample's loss weight as their fourth element (dicts: under
    ``"weight"``, multiplied into a weight a :class:`~lightning_prune.PrunedDataModule` gives); the
    training loss must be ``(weight * per_sample_loss).mean()``: read the weights with
    :func:`~lightning_prune.batch_weights` (ones for the ``(x, y, index)`` batches of the
    collectors, so one ``training_step`` serves both), or use ``Classifier(weighted_loss="mean")``.
    This is checked on the first batch of every fit, for any model: a loss that does not scale with the
    weights is refused. The per-sample loss the plans rank by is, for any task, the unreduced
    ``"loss_per_sample"`` (``[B]``) that ``training_step`` returns (``lp.weighted_outputs(per_sample_loss,
    batch)`` returns it with the weighted mean), or, for classification, ``loss_fn(logits, targets)`` on
    the ``"logits"`` it returns as for every collector (see :mod:`lightning_prune.dynamic.losses` for what
    is refused: both sources, neither, a switch between them within a fit).

    Args:
        prune_ratio: probability of skipping a well-learned sample in a pruned epoch, in ``(0, 0.9]``
            (the paper's default 0.5, used when neither it nor ``target_saving`` is given). The fraction
            of all samples skipped is lower: roughly ``delta x prune_ratio x`` the fraction below the mean loss.
        target_saving: instead of ``prune_ratio``, the fraction of all sample presentations of the fit
            to skip, in ``(0, 1)``: each pruned epoch then skips an exact count (module docs), and the
            fit ends within 1 point of it.
        max_weight: with ``target_saving`` only: the largest loss weight a plan gives the kept samples, in
            ``[1, 10]`` (default :data:`TARGET_MAX_WEIGHT`, 2, the paper's ratio 0.5; the module docs say
            how a plan stays within it and what larger weights did). 1 skips without reweighting.
        delta: the first ``floor(delta * num_epochs)`` epochs are pruned, the rest use the full data;
            in ``(0, 1]``.
        num_epochs: the length of training the annealing refers to; ``Trainer.max_epochs`` if omitted.
        seed: seeds each epoch's draw (``numpy.random.default_rng([seed, epoch])``).
        loss_fn: ``loss_fn(logits, targets) -> [B]`` per-sample losses, for a ``training_step`` that returns
            logits and no ``"loss_per_sample"``; cross-entropy by default. Use the per-sample form of your
            training loss (``reduction="none"``). Refused together with a ``"loss_per_sample"``.
        check_weighting: check that the training loss scales with the batch's weights (through
            autograd, once per fit). Switch it off only if your loss applies the weights outside autograd.
        adapter, num_samples, save_path, name: as for every :class:`~lightning_prune.ScoreCollector`;
            the scores are each sample's latest loss (higher = less well learned).
    """

    method: ClassVar[str] = "infobatch"
    varies_epoch_length: ClassVar[bool] = True
    non_identifying: ClassVar[frozenset[str]] = frozenset({"check_weighting"})  # a safety check, not the plan
    nonfinite_harm: ClassVar[str] = (
        "A NaN loss would turn pruning off and an inf one would mark every finite sample well learned."
    )
    """Why a non-finite loss is refused (the fold's message; a subclass that plans otherwise says its own)."""

    def __init__(
        self,
        prune_ratio: float | None = None,
        delta: float = 0.875,
        *,
        target_saving: float | None = None,
        max_weight: float | None = None,
        num_epochs: int | None = None,
        seed: int = 0,
        loss_fn: LossFunction | None = None,
        check_weighting: bool = True,
        adapter: BatchAdapter | None = None,
        num_samples: int | None = None,
        save_path: str | None = None,
        name: str | None = None,
    ) -> None:
        refuse_both(type(self).__name__, prune_ratio, target_saving)
        target = None if target_saving is None else check_target_saving(target_saving, type(self).__name__)
        # None: target_saving chooses each epoch's ratio; neither given: the paper's 0.5
        ratio = (
            None if target is not None else _check_ratio(DEFAULT_PRUNE_RATIO if prune_ratio is None else prune_ratio)
        )
        weight_bound = _check_max_weight(max_weight, target)
        delta_value = _check_delta(delta)
        epochs = None if num_epochs is None else _check_num_epochs(num_epochs)
        seed_value = check_seed(seed, "seed")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(
                f"InfoBatch loss_fn={loss_fn!r} must be a function loss_fn(logits, targets) -> per-sample losses [B], "
                'e.g. lambda logits, y: F.cross_entropy(logits, y, reduction="none").'
            )
        self._loss_reader = PerSampleLossReader(type(self).__name__, loss_fn is not None, adapter)
        super().__init__(adapter=self._loss_reader, num_samples=num_samples, save_path=save_path, name=name)
        self._resumed_loss_source: str | None = None
        self.prune_ratio: float | None = ratio
        self.target_saving = target
        self.max_weight = weight_bound
        self.delta = delta_value
        self.num_epochs = epochs
        self.seed = seed_value
        self.loss_fn = loss_fn or per_sample_cross_entropy
        self.check_weighting = bool(check_weighting)
        self._trainer: pl.Trainer | None = None

    # ------------------------------------------------------------------ collector contract
    @override
    def state_spec(self) -> Mapping[str, PerSample]:
        return {"loss": PerSample(reduce="last")}

    @override
    def batch_values(self, view: BatchView) -> Mapping[str, Tensor]:
        batch = int(view.indices.shape[0])
        if isinstance(view, LossView) and view.per_sample_loss is not None:
            loss: Any = view.per_sample_loss
            fix = (
                "Reduce every dimension but the batch's (e.g. per_pixel.mean(dim=(1, 2)) for segmentation, a "
                "sequence's masked token mean for a language model); lp.weighted_outputs(per_sample_loss, batch) "
                "checks the shape where you compute it."
            )
        else:
            loss = self.loss_fn(view.logits.float(), view.targets)
            fix = (
                'Pass the per-sample form, e.g. loss_fn=lambda logits, y: F.cross_entropy(logits, y, reduction="none").'
            )
        origin = self.loss_origin
        if not isinstance(loss, Tensor):
            raise TypeError(
                f"{type(self).__name__}: {origin} must be a tensor of one loss per sample, shape ({batch},); it is "
                f'{type(loss).__name__}. Use the per-sample form of your loss (reduction="none").'
            )
        if tuple(loss.shape) != (batch,):  # shapes are known on the host: no synchronisation
            raise ValueError(
                f"{type(self).__name__}: {origin} must hold one loss per sample, shape ({batch},); it has shape "
                f"{tuple(loss.shape)}: {_loss_shape_hint(tuple(loss.shape), batch)}. {fix}"
            )
        return {"loss": loss.detach().float()}

    @property
    def loss_origin(self) -> str:
        """Where this fit's per-sample losses come from, as the messages name it."""
        return f"training_step's {PER_SAMPLE_LOSS!r}" if self._loss_reader.source == FROM_TRAINING_STEP else "loss_fn"

    @property
    @override
    def scores(self) -> Scores:
        """Each sample's latest loss (see :class:`~lightning_prune.ScoreCollector`); without labels when the
        losses came from ``training_step`` (no class labels were read)."""
        scores = super().scores
        if self._loss_reader.source == FROM_TRAINING_STEP:
            scores.labels = None
        return scores

    @override
    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        return state["loss"]

    @override
    def fold(self, epoch: int, values: Mapping[str, Tensor], state: dict[str, Tensor], seen: Tensor) -> None:
        # the epoch's rows are exchanged already, so every rank finds (and raises on) the same samples
        bad = seen & ~torch.isfinite(values["loss"])
        count = int(bad.sum())  # once per epoch
        if count:
            first = bad.nonzero().reshape(-1)[:10].tolist()
            raise FloatingPointError(
                f"{type(self).__name__}: {self.loss_origin} gave a non-finite loss for {count} samples in epoch "
                f"{epoch} (sample indices {first}{' ...' if count > len(first) else ''}). {self.nonfinite_harm} "
                f"Check {self.loss_origin} (e.g. log(0)) and those samples' inputs and targets."
            )

    @override
    def _reset(self) -> None:
        super()._reset()
        self.served: dict[int, tuple[int, int]] = {}
        self.planned_skips: dict[int, int] = {}  # target_saving: epoch -> samples its plan left out
        self._warned_heavy = False
        self._weight_probe: Tensor | None = None
        self._weight_attempts = 0
        self._weighting_checked = False
        self._layout: tuple[int, int, bool, int] | None = None  # batch size, replicas, drop_last, full samples
        self._plan_size = 0
        # a plan is drawn from losses its epoch overwrites, so a mid-epoch checkpoint keeps the plan itself
        self._mid_epoch = MidEpochResume(type(self).__name__, saves_plan=True)

    @override
    def _check_coverage(self, epoch: int, covered: int) -> None:
        """Skipped samples keep their last loss by design; an epoch that covers less is no fault."""

    # ------------------------------------------------------------------ planning
    def pruned_epochs(self, max_epochs: int | None = None) -> int:
        """How many epochs, from the first, are pruned: ``floor(delta * num_epochs)``."""
        total = self.num_epochs if self.num_epochs is not None else max_epochs
        if total is None or total < 1:
            raise ValueError(
                f"{type(self).__name__} anneals for the last epochs, so it needs the length of training: "
                f"set Trainer(max_epochs=...) or {type(self).__name__}(num_epochs=...)."
            )
        # the small tolerance keeps e.g. 0.875 * 8 = 7.0 at 7 despite rounding
        return math.floor(self.delta * total + 1e-9)

    def serving_epoch(self, default: int) -> int:
        """The epoch the training loader is being built or iterated for.

        Lightning sets the sampler's epoch only after it has built the loader (and, when resuming,
        after it has started iterating it), so read the fit loop's count while a fit runs.
        """
        trainer = self._trainer
        if trainer is None:
            return default
        return fit_epoch(trainer)

    def plan(self, pool: np.ndarray, epoch: int) -> EpochPlan:
        """The samples of ``pool`` epoch ``epoch`` serves, and their weights (identical on every rank)."""
        pool = np.asarray(pool, dtype=np.int64)
        saved = self._mid_epoch.saved_plan(pool, epoch)
        if saved is not None:  # resumed inside this epoch: its plan as it was drawn
            return EpochPlan(saved[0], saved[1], pool.size)
        max_epochs = self._trainer.max_epochs if self._trainer is not None else None
        if not self._buffers or epoch >= self.pruned_epochs(max_epochs):
            return EpochPlan(pool, np.ones(pool.size, dtype=np.float32), pool.size)
        rows = torch.as_tensor(pool, device=self._buffers["loss"].device)
        losses = self._buffers["loss"][rows].double().cpu().numpy()
        known = (self._buffers["times_seen"][rows] > 0).cpu().numpy()
        rng = np.random.default_rng([self.seed, epoch])
        if self.prune_ratio is not None:
            return infobatch_plan(pool, losses, known, self.prune_ratio, rng)
        assert self.target_saving is not None
        skipping = range(1, self.pruned_epochs(max_epochs))  # epoch 0 has no losses; the rest anneal
        total = self.num_epochs if self.num_epochs is not None else max_epochs
        assert total is not None  # pruned_epochs refused a fit without a length
        share = epoch_share(self.target_saving, epoch, skipping, pool.size, total, self.planned_skips)
        assert self.max_weight is not None  # set with every target
        plan = infobatch_target_plan(pool, losses, known, share, rng, self.max_weight)
        self.planned_skips[int(epoch)] = plan.skipped  # a function of the state: planning again agrees
        self._warn_if_heavy(plan, epoch, total)
        return plan

    def _warn_if_heavy(self, plan: EpochPlan, epoch: int, total: int) -> None:
        heaviest = float(plan.weights.max(initial=1.0))
        if heaviest <= HEAVY_WEIGHT or self._warned_heavy:
            return
        self._warned_heavy = True
        rank_zero_warn(
            f"InfoBatch(target_saving={self.target_saving}, max_weight={self.max_weight:g}) over {total} epochs: epoch "
            f"{epoch} skips {plan.skipped} of {plan.pool_size} samples, so the well-learned samples it keeps weigh "
            f"{heaviest:.1f}x (InfoBatch's rescaling; the paper's ratio 0.5 and the default max_weight weigh them "
            f"{TARGET_MAX_WEIGHT:g}x). Weights this large can wreck a fit: a CIFAR-shaped ResNet-18 trained 8 epochs "
            "with a 50% target ended at 29% test accuracy with weights up to 4x and 32% with 10x, against 97% for "
            f"the full data trained for as many samples. Leave max_weight at its default {TARGET_MAX_WEIGHT:g}, train "
            "for more epochs (the skips then spread over more of them), or lower target_saving."
        )

    def resumed_batches(self, epoch: int) -> int:
        """Batches of ``epoch`` trained before the mid-epoch checkpoint this fit resumed from (else 0)."""
        return self._mid_epoch.batches_done(epoch)

    @property
    def fraction_skipped(self) -> float:
        """Of the samples full-data epochs would have served (under the same ``limit_train_batches``), the
        fraction the epochs run did not serve; counted from the batches that ran, not from the plans."""
        full = sum(size for _, size in self.served.values())
        return 0.0 if full == 0 else max(0.0, 1.0 - sum(kept for kept, _ in self.served.values()) / full)

    def wrap(self, datamodule: pl.LightningDataModule) -> pl.LightningDataModule:
        """``datamodule`` with a training loader this callback plans (see :class:`~lightning_prune.DynamicDataModule`)."""
        from lightning_prune.dynamic.loader import DynamicDataModule

        return DynamicDataModule(datamodule, self)

    def check_length(self, max_epochs: int | None) -> None:
        """Refuse a fit of ``max_epochs`` that can never prune; warn about one that stops before annealing.

        Called at the fit's setup; a caller that knows the length earlier (e.g. before a study's other
        trainings) can call it then.
        """
        pruned = self.pruned_epochs(max_epochs)
        total = self.num_epochs if self.num_epochs is not None else max_epochs
        if pruned < 2:  # epoch 0 has no losses yet, so it always serves the full data
            need = next(n for n in range(2, 10_000) if math.floor(self.delta * n + 1e-9) >= 2)
            source = f"num_epochs={total}" if self.num_epochs is not None else f"max_epochs={total}"
            raise ValueError(
                f"InfoBatch(delta={self.delta}) over {source} never prunes: epoch 0 serves every sample (no losses "
                f"yet) and the epochs from floor(delta * {total}) = {pruned} on anneal to the full data. Train for "
                f"at least {need} epochs (Trainer(max_epochs=...) or InfoBatch(num_epochs=...)), or leave InfoBatch out."
            )
        if self.target_saving is not None and total is not None:
            reachable = MAX_PRUNE_RATIO * (pruned - 1) / total
            if self.target_saving > reachable + 1e-9:
                raise ValueError(
                    f"InfoBatch(target_saving={self.target_saving}, delta={self.delta}) over {total} epochs cannot be "
                    f"met: only epochs 1 .. {pruned - 1} prune (epoch 0 has no losses, the rest anneal), each at most "
                    f"{MAX_PRUNE_RATIO:.0%} of the samples, which skips at most {reachable:.3f} of the fit. Lower "
                    "target_saving, raise delta or train for more epochs."
                )
        if max_epochs is not None and 0 < max_epochs <= pruned and self.delta < 1.0:
            rank_zero_warn(
                f"InfoBatch(num_epochs={total}, delta={self.delta}) anneals from epoch {pruned} on, but the Trainer "
                f"stops after max_epochs={max_epochs}: this fit never anneals (it never ends on the full data, which "
                "the paper finds necessary to lose no accuracy). Omit num_epochs (it follows max_epochs), unless you "
                f"will resume this fit to {total} epochs."
            )

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.check_length(trainer.max_epochs)  # fails now, not after the first epoch
        reload_every = reload_dataloaders_every(trainer)
        if reload_every == 0:
            reload_train_loader_every_epoch(trainer)
            rank_zero_info(
                f"{type(self).__name__}: set Trainer(reload_dataloaders_every_n_epochs=1) so that Lightning measures each "
                "epoch's length (it changes every epoch)."
            )
        elif reload_every != 1:
            raise ValueError(
                f"{type(self).__name__} serves a different number of batches every epoch, which Lightning only counts when it "
                f"rebuilds the training loader every epoch; Trainer(reload_dataloaders_every_n_epochs={reload_every}) "
                "would miscount validation and progress. Use reload_dataloaders_every_n_epochs=1 (or 0)."
            )
        self._trainer = trainer

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        # a resumed fit keeps the checkpoint's loss source (its losses must not mix with another's)
        self._loss_reader.source, self._resumed_loss_source = self._resumed_loss_source, None
        self._weight_probe, self._weight_attempts = None, 0
        self._weighting_checked = not self.check_weighting
        check_progress_schedules(trainer)
        fixed = fixed_length_step_schedules(trainer)
        if fixed:
            raise ValueError(
                f"The fit's learning-rate schedule ({', '.join(fixed)}, stepped per step) counts a number of steps "
                f"fixed up front from full-length epochs; {type(self).__name__}'s pruned epochs are shorter, so it would end above "
                "its final value. Use lp.progress_cosine(optimizer, trainer) (or return lightning_prune.models.schedules."
                "cosine_schedule(optimizer, self.trainer) from configure_optimizers), which follows the fraction of "
                "training done."
            )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        sampler = self._sampler(trainer)
        loader = trainer.train_dataloader
        batch_size = int(getattr(loader, "batch_size", None) or 1)
        drop_last = bool(getattr(loader, "drop_last", False))
        replicas = int(sampler.num_replicas)
        pool = int(sampler.pool.size)
        full_batches = limited_train_batches(trainer, self._batches(pool, batch_size, replicas, drop_last))
        self._layout = (batch_size, replicas, drop_last, min(pool, full_batches * batch_size * replicas))
        self._mid_epoch.check_layout(batch_size, replicas)
        # Lightning skips on_train_epoch_start when it resumes mid-epoch: the resumed epoch's plan is known here
        self._plan_size = int(sampler.epoch_plan().indices.size)
        self._refuse_step_budget(trainer, full_batches)
        least = limited_train_batches(trainer, self._batches(self._least_served(pool), batch_size, replicas, drop_last))
        interval, every_n_epochs = val_check_settings(trainer)
        if isinstance(interval, int) and every_n_epochs is not None and interval > least:
            raise ValueError(
                f"Trainer(val_check_interval={interval}) counts batches within an epoch, but {type(self).__name__}'s pruned "
                f"epochs may have as few as {least} batches (full epochs: {full_batches}), and Lightning stops a fit "
                "whose epoch is shorter than val_check_interval. Use a fraction of the epoch (e.g. "
                "val_check_interval=0.5), check_val_every_n_epoch=None to count batches across epochs, or "
                f"val_check_interval <= {least}."
            )

    @staticmethod
    def _batches(samples: int, batch_size: int, replicas: int, drop_last: bool) -> int:
        share = -(-samples // replicas)  # each rank's share, padded
        return share // batch_size if drop_last else -(-share // batch_size)

    def _least_served(self, pool: int) -> int:
        """The fewest samples a pruned epoch can serve: all but one below the mean, a ``prune_ratio`` of them skipped."""
        if self.prune_ratio is None:  # target_saving: up to 0.9 of the known samples
            return pool - math.floor(MAX_PRUNE_RATIO * pool + 1e-9)
        well_learned = max(pool - 1, 0)
        return pool - (well_learned - int((1.0 - self.prune_ratio) * well_learned))

    def _refuse_step_budget(self, trainer: pl.Trainer, full_batches: int) -> None:
        """Refuse a ``max_steps`` that can stop the fit before its epochs end (InfoBatch plans by epochs)."""
        max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
        if max_steps < 0:
            return
        per_epoch = -(-full_batches // accumulated_batches(trainer))
        if max_epochs is not None and max_epochs > 0 and max_steps >= per_epoch * max_epochs:
            return
        bound = "" if max_epochs is None or max_epochs < 1 else f" (it may take up to {per_epoch * max_epochs} steps)"
        raise ValueError(
            f"Trainer(max_steps={max_steps}) can stop this fit before its last epoch{bound}. {type(self).__name__} plans by epochs "
            "and its epochs have varying lengths, so a step budget may end the fit while pruning, before the "
            "annealing epochs, and with the learning rate above 0. Give the length in epochs only "
            "(Trainer(max_epochs=...), max_steps=-1)."
        )

    def _sampler(self, trainer: pl.Trainer) -> DynamicSampler:
        from lightning_prune.dynamic.loader import planned_sampler

        return planned_sampler(trainer, self)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sampler = self._sampler(trainer)
        self._plan_size = int(sampler.epoch_plan().indices.size)
        self.served[trainer.current_epoch] = (0, self._full_samples())

    def _full_samples(self) -> int:
        if self._layout is None:
            raise RuntimeError("internal: InfoBatch counts served samples only after on_train_start")
        return self._layout[3]

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._weighting_checked:
            return
        weights = carried_weights(batch)
        if weights is None:
            raise ValueError(
                "InfoBatch: the batch reaching training_step carries no weights (the fourth element of "
                "(x, y, index, weight), or a dict's 'weight'); a collate_fn or on_before_batch_transfer dropped "
                "them, so the kept well-learned samples cannot be up-weighted. Keep the weight in the batch (if your batch "
                "holds it where this check cannot find it and your loss uses it, pass InfoBatch(check_weighting=False))."
            )
        if weights.is_floating_point() and weights.is_leaf and not weights.requires_grad:
            # a leaf fresh from the loader: autograd then shows whether and how the loss depends on it
            weights.requires_grad_(True)
            self._weight_probe = weights

    @override
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        probe, self._weight_probe = self._weight_probe, None
        if probe is None:
            return
        if self._weighting_checked or not loss.requires_grad:
            probe.requires_grad_(False)
            return
        (grad,) = torch.autograd.grad(loss, probe, retain_graph=True, allow_unused=True)
        probe.requires_grad_(False)  # the backward then skips it, and later hooks may call .numpy() on it
        # Euler: for mean(w * l) (or any loss homogeneous of degree 1 in w), grad . w equals the loss;
        # a loss that ignores w, or normalises it (sum(w * l) / sum(w)), gives 0
        scaled = 0.0 if grad is None else float((grad * probe.detach()).sum())
        value = float(loss.detach())
        self._weight_attempts += 1
        if not math.isfinite(value) or value == 0.0:
            self._weighting_checked = self._weight_attempts >= WEIGHT_CHECK_ATTEMPTS
            return
        self._weighting_checked = True
        ratio = scaled / value
        if ratio < WEIGHT_SCALING_FLOOR:
            raise ValueError(
                f"InfoBatch: the training loss does not scale with the per-sample weights the sampler serves "
                f"(d loss / d weight . weight = {ratio:.3g} x loss; (weight * per_sample_loss).mean() gives 1). The "
                f"model {'ignores the weights' if grad is None else 'ignores or normalises the weights away'}, so the "
                "kept well-learned samples are not up-weighted and the pruned epochs' gradient is biased. Compute the "
                "loss as (batch_weights(batch) * per_sample_loss).mean() with lp.batch_weights, or return "
                "lp.weighted_outputs(per_sample_loss, batch) (for lp.Classifier: weighted_loss='mean'). If your loss applies the weights outside autograd "
                "(detached), pass InfoBatch(check_weighting=False)."
            )

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._weight_probe is not None:  # no backward ran (e.g. training_step returned None)
            self._weight_probe.requires_grad_(False)
            self._weight_probe = None
        epoch = trainer.current_epoch
        if self._layout is not None and epoch in self.served:
            # what ran: every batch but an epoch's last is full, so k batches served k * B per rank
            batch_size, replicas, _, full = self._layout
            self.served[epoch] = (min(self._plan_size, (batch_idx + 1) * batch_size * replicas), full)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_end(trainer, pl_module)
        total = self.num_epochs if self.num_epochs is not None else trainer.max_epochs
        if total is not None and len(self.served) >= total:  # a whole fit (not one cut short or still to resume)
            report_saving(type(self).__name__, self.target_saving, self.fraction_skipped, self.target_shortfall())

    def target_shortfall(self) -> str:
        """Why a fit with ``target_saving`` may end away from it, and what to change (the warning's words)."""
        return (
            "an epoch's share exceeded 0.9 of the samples it knows a loss of (raise delta, train longer or lower "
            "target_saving)"
        )

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._mid_epoch.epoch_ended(trainer.current_epoch)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._weight_probe = None
        if stage == "fit":
            self._trainer = None

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if state:
            state["served"] = {int(epoch): list(sizes) for epoch, sizes in self.served.items()}
            state["planned_skips"] = {int(epoch): int(count) for epoch, count in self.planned_skips.items()}
            state["loss_source"] = self._loss_reader.source
            sampler = getattr(self._trainer.train_dataloader, "sampler", None) if self._trainer is not None else None
            state["mid_epoch"] = self._mid_epoch.capture(self._trainer, sampler if self._plans(sampler) else None)
        return state

    def _plans(self, sampler: Any) -> bool:
        from lightning_prune.dynamic.loader import DynamicSampler

        return isinstance(sampler, DynamicSampler) and sampler.planner is self

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict:
            self.served = {int(epoch): (int(kept), int(pool)) for epoch, (kept, pool) in state_dict["served"].items()}
            skips = state_dict.get("planned_skips", {})  # absent from checkpoints of a ratio-only version
            self.planned_skips = {int(epoch): int(count) for epoch, count in skips.items()}
            source = state_dict.get("loss_source")
            if source is not None and source not in LOSS_SOURCES:
                raise ValueError(
                    f"{type(self).__name__}: the checkpoint's loss_source={source!r} is not one of {LOSS_SOURCES}."
                )
            self._resumed_loss_source = source
            self._mid_epoch.load(state_dict.get("mid_epoch"))
