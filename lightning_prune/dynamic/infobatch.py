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
  resumed fit plans exactly the epochs an uninterrupted one would;
* each epoch's plan is drawn from ``numpy.random.default_rng([seed, epoch])`` when the training
  loader asks for it (:class:`~lightning_prune.dynamic.loader.DynamicSampler`), and the weights travel
  with the sample indices to the dataset (so worker processes see them too);
* the epoch length changes, so Lightning must rebuild the training loader every epoch
  (``reload_dataloaders_every_n_epochs=1``, set by this callback when it is 0), and a step-based
  learning-rate schedule must follow the training progress instead of a step count fixed up front
  (:func:`~lightning_prune.models.schedules.progress_cosine`; :class:`~lightning_prune.Classifier`
  switches to it by itself).

Differences from the official code (NUS-HPC-AI-Lab/InfoBatch): the random draws come from a
generator seeded by ``(seed, epoch)`` instead of NumPy's global seed, so plans differ draw for draw
but follow the same rule; samples never seen have no loss and count as not well learned (the
official code starts every loss at 3, which has the same effect in the first epoch).
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
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightning_prune.collectors.base import BatchAdapter, BatchView, ScoreCollector
from lightning_prune.collectors.state import PerSample
from lightning_prune.trainer_access import fit_epoch, reload_dataloaders_every, reload_train_loader_every_epoch

if TYPE_CHECKING:
    from lightning_prune.dynamic.loader import DynamicSampler

MAX_PRUNE_RATIO = 0.9
"""Above it the kept well-learned samples' weight would exceed 10 (the official code caps it there too)."""

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


class InfoBatch(ScoreCollector):
    """Dynamic pruning callback: skip well-learned samples each epoch, rescale the rest (see the module docs).

    Use it with the data module it plans for::

        infobatch = lp.InfoBatch(prune_ratio=0.5)
        trainer = pl.Trainer(max_epochs=30, callbacks=[infobatch])
        trainer.fit(model, datamodule=infobatch.wrap(dm))   # dm may be a PrunedDataModule

    Training batches then carry each sample's loss weight as their fourth element (dicts: under
    ``"weight"``, multiplied into a weight a :class:`~lightning_prune.PrunedDataModule` gives); the
    training loss must be ``(weight * per_sample_loss).mean()``, which is
    ``Classifier(weighted_loss="mean")``. ``training_step`` returns ``{"loss", "logits"}`` as for every
    collector; the per-sample loss recorded is ``loss_fn(logits, targets)``.

    Args:
        prune_ratio: probability of skipping a well-learned sample in a pruned epoch, in ``[0, 0.9]``
            (the paper's default 0.5). The fraction of all samples skipped is lower: roughly this times
            the fraction below the mean loss, over the pruned epochs.
        delta: the first ``floor(delta * num_epochs)`` epochs are pruned, the rest use the full data.
        num_epochs: the length of training the annealing refers to; ``Trainer.max_epochs`` if omitted.
        seed: seeds each epoch's draw (``numpy.random.default_rng([seed, epoch])``).
        loss_fn: ``loss_fn(logits, targets) -> [B]`` per-sample losses; cross-entropy by default. Use
            the per-sample form of your training loss.
        adapter, num_samples, save_path, name: as for every :class:`~lightning_prune.ScoreCollector`;
            the scores are each sample's latest loss (higher = less well learned).
    """

    method: ClassVar[str] = "infobatch"
    varies_epoch_length: ClassVar[bool] = True

    def __init__(
        self,
        prune_ratio: float = 0.5,
        delta: float = 0.875,
        *,
        num_epochs: int | None = None,
        seed: int = 0,
        loss_fn: LossFunction | None = None,
        adapter: BatchAdapter | None = None,
        num_samples: int | None = None,
        save_path: str | None = None,
        name: str | None = None,
    ) -> None:
        if not 0.0 <= prune_ratio <= MAX_PRUNE_RATIO:
            raise ValueError(
                f"InfoBatch prune_ratio={prune_ratio} must lie in [0, {MAX_PRUNE_RATIO}]: it is the probability of "
                f"skipping a well-learned sample, and the kept ones are weighted 1 / (1 - prune_ratio)."
            )
        if not 0.0 <= delta <= 1.0:
            raise ValueError(f"InfoBatch delta={delta} must lie in [0, 1] (the fraction of epochs that are pruned).")
        if num_epochs is not None and (int(num_epochs) != num_epochs or num_epochs < 1):
            raise ValueError(f"InfoBatch num_epochs={num_epochs} must be a positive integer or None (max_epochs).")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"InfoBatch seed={seed} must be a non-negative integer.")
        super().__init__(adapter=adapter, num_samples=num_samples, save_path=save_path, name=name)
        self.prune_ratio = float(prune_ratio)
        self.delta = float(delta)
        self.num_epochs = None if num_epochs is None else int(num_epochs)
        self.seed = int(seed)
        self.loss_fn = loss_fn or per_sample_cross_entropy
        self._trainer: pl.Trainer | None = None

    # ------------------------------------------------------------------ collector contract
    def hparams(self) -> dict[str, Any]:
        return {"prune_ratio": self.prune_ratio, "delta": self.delta, "num_epochs": self.num_epochs, "seed": self.seed}

    def state_spec(self) -> Mapping[str, PerSample]:
        return {"loss": PerSample(reduce="last")}

    def batch_values(self, view: BatchView) -> Mapping[str, Tensor]:
        return {"loss": self.loss_fn(view.logits.float(), view.targets).detach()}

    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        return state["loss"]

    def _reset(self) -> None:
        super()._reset()
        self.served: dict[int, tuple[int, int]] = {}

    def _check_coverage(self, epoch: int, covered: int) -> None:
        """Skipped samples keep their last loss by design; an epoch that covers less is no fault."""

    # ------------------------------------------------------------------ planning
    def pruned_epochs(self, max_epochs: int | None = None) -> int:
        """How many epochs, from the first, are pruned: ``floor(delta * num_epochs)``."""
        total = self.num_epochs if self.num_epochs is not None else max_epochs
        if total is None or total < 1:
            raise ValueError(
                "InfoBatch anneals to the full data for the last epochs, so it needs the length of training: "
                "set Trainer(max_epochs=...) or InfoBatch(num_epochs=...)."
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
        max_epochs = self._trainer.max_epochs if self._trainer is not None else None
        if not self._buffers or epoch >= self.pruned_epochs(max_epochs):
            return EpochPlan(pool, np.ones(pool.size, dtype=np.float32), pool.size)
        rows = torch.as_tensor(pool, device=self._buffers["loss"].device)
        losses = self._buffers["loss"][rows].double().cpu().numpy()
        known = (self._buffers["times_seen"][rows] > 0).cpu().numpy()
        return infobatch_plan(pool, losses, known, self.prune_ratio, np.random.default_rng([self.seed, epoch]))

    @property
    def fraction_skipped(self) -> float:
        """Of all samples the planned epochs could have served, the fraction they skipped."""
        pool = sum(size for _, size in self.served.values())
        return 0.0 if pool == 0 else 1.0 - sum(kept for kept, _ in self.served.values()) / pool

    def wrap(self, datamodule: pl.LightningDataModule) -> pl.LightningDataModule:
        """``datamodule`` with a training loader this callback plans (see :class:`~lightning_prune.DynamicDataModule`)."""
        from lightning_prune.dynamic.loader import DynamicDataModule

        return DynamicDataModule(datamodule, self)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.pruned_epochs(trainer.max_epochs)  # fails now, not after the first epoch, without a length
        reload_every = reload_dataloaders_every(trainer)
        if reload_every == 0:
            reload_train_loader_every_epoch(trainer)
            rank_zero_info(
                "InfoBatch: set Trainer(reload_dataloaders_every_n_epochs=1) so that Lightning measures each "
                "epoch's length (it changes every epoch)."
            )
        elif reload_every != 1:
            raise ValueError(
                f"InfoBatch serves a different number of batches every epoch, which Lightning only counts when it "
                f"rebuilds the training loader every epoch; Trainer(reload_dataloaders_every_n_epochs={reload_every}) "
                "would miscount validation and progress. Use reload_dataloaders_every_n_epochs=1 (or 0)."
            )
        from lightning_prune.models.classifier import Classifier

        if isinstance(pl_module, Classifier) and pl_module.hparams["weighted_loss"] != "mean":
            raise ValueError(
                "InfoBatch weights the kept well-learned samples by 1 / (1 - prune_ratio) to keep the gradient "
                f"unbiased; Classifier(weighted_loss={pl_module.hparams['weighted_loss']!r}) divides the weights back "
                "out. Use Classifier(..., weighted_loss='mean')."
            )
        self._trainer = trainer

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._sampler(trainer)

    def _sampler(self, trainer: pl.Trainer) -> DynamicSampler:
        from lightning_prune.dynamic.loader import DynamicSampler

        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if not (isinstance(sampler, DynamicSampler) and sampler.planner is self):
            raise ValueError(
                "InfoBatch plans each epoch through its own sampler, but the training loader uses "
                f"{type(sampler).__name__}, so nothing would be pruned. Fit with "
                "trainer.fit(model, datamodule=infobatch.wrap(datamodule))."
            )
        return sampler

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sampler = self._sampler(trainer)
        plan = sampler.epoch_plan()
        self.served[trainer.current_epoch] = (int(plan.indices.size), plan.pool_size)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        if stage == "fit":
            self._trainer = None

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if state:
            state["served"] = {int(epoch): list(sizes) for epoch, sizes in self.served.items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict:
            self.served = {int(epoch): (int(kept), int(pool)) for epoch, (kept, pool) in state_dict["served"].items()}
