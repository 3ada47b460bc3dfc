"""``RS2``: repeated sampling of random subsets, without replacement (Okanovic et al., ICLR 2024).

Every epoch trains on a fresh uniform random subset of ``N - round(prune_ratio * N)`` samples of the
pool (the whole training set, or a static selection underneath). The subsets are consecutive slices
of one stream of permutations of the pool: the first epochs walk one permutation until it is used
up, then the next permutation continues, so **every sample is served once before any sample is
served twice** (RS2's default, "without replacement"). At the end of any epoch the number of times
two samples were served differs by at most one. This is, in the paper's words, plain full-data
training in which an "epoch" is a round of ``(1 - prune_ratio) * N`` samples; RS2 reports it as the
strongest cheap baseline of data pruning at the same number of samples forwarded.

Where a slice crosses from one permutation to the next, the samples the epoch already took from the
end of the old permutation are moved to the end of the new one (keeping its order otherwise), so no
epoch serves a sample twice. Permutation ``c`` is drawn from ``numpy.random.default_rng([seed,
STREAM, c])``: a plan is a function of ``(seed, epoch)`` alone, identical on every rank and after a
resume, with no state to exchange; a checkpoint taken inside an epoch records how many of its batches
ran, and the resumed epoch serves exactly the rest (:mod:`lightning_prune.dynamic.resume`).

``target_saving=`` (:mod:`lightning_prune.dynamic.target`) is the same as ``prune_ratio``: every
epoch skips ``round(target_saving x N)`` of the ``N`` pool samples, so the fit ends within half a
sample per epoch of the target (``fraction_skipped`` reports it, from the epochs' plans).

Every served sample has weight 1 (a uniform subset needs no reweighting); epochs all have the same
length, so step-counted learning-rate schedules stay right. The sampler machinery (equal DDP shares,
weights travelling with the indices, a static selection underneath) is
:class:`~lightning_prune.DynamicDataModule`'s, as for :class:`~lightning_prune.InfoBatch`.

Differences from the official code (the RS2 repository of Okanovic et al.): the official sampler
draws with ``torch`` under a global seed and, at the end of a permutation, serves a shorter last
round or starts a new permutation; here every epoch has exactly the same length and the cross-over
rule above keeps the no-repeat guarantee. The distribution of each epoch's subset is the same
(uniform among the samples least served so far).
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
from typing_extensions import override

from lightning_prune.dynamic.infobatch import DEFAULT_PRUNE_RATIO, EpochPlan
from lightning_prune.dynamic.resume import MidEpochResume
from lightning_prune.dynamic.target import check_target_saving, refuse_both, report_saving
from lightning_prune.selection.strategies import check_prune_ratio, check_seed, num_to_keep
from lightning_prune.trainer_access import fit_epoch

STREAM = 0x525332
"""Separates RS2's permutation stream from the epoch orders seeded by the same ``seed`` ("RS2")."""


def rs2_positions(pool_size: int, num_keep: int, seed: int, epoch: int) -> np.ndarray:
    """Positions into the pool that ``epoch`` serves (see the module docs), in stream order."""
    if not 1 <= num_keep <= pool_size:
        raise ValueError(f"num_keep={num_keep} must lie in [1, pool_size={pool_size}].")
    start, end = epoch * num_keep, (epoch + 1) * num_keep
    order = _permutation(pool_size, seed, 0)
    cycle, cycle_start = 0, 0
    pieces: list[np.ndarray] = []
    while True:
        cycle_end = cycle_start + pool_size
        if start < cycle_end:
            pieces.append(order[max(start, cycle_start) - cycle_start : min(end, cycle_end) - cycle_start])
        if end <= cycle_end:
            return np.concatenate(pieces)
        crossing_start = (cycle_end // num_keep) * num_keep  # the epoch that crosses into the next cycle
        tail = order[crossing_start - cycle_start :] if crossing_start < cycle_end else order[:0]
        cycle += 1
        following = _permutation(pool_size, seed, cycle)
        taken = np.isin(following, tail)
        order = np.concatenate([following[~taken], following[taken]])
        cycle_start = cycle_end


def _permutation(pool_size: int, seed: int, cycle: int) -> np.ndarray:
    return np.random.default_rng([seed, STREAM, cycle]).permutation(pool_size)


class RS2(pl.Callback):
    """Dynamic random pruning: a fresh random subset each epoch, without replacement across epochs.

    Use it as :class:`~lightning_prune.InfoBatch` is used::

        rs2 = lp.RS2(prune_ratio=0.5)
        trainer = pl.Trainer(max_epochs=30, callbacks=[rs2])
        trainer.fit(model, datamodule=rs2.wrap(dm))   # dm may be a PrunedDataModule

    Batches carry a weight of 1 as their fourth element (dicts: ``"weight"``), so the same
    ``training_step`` serves InfoBatch and RS2.

    Args:
        prune_ratio: the fraction of the pool each epoch leaves out, strictly between 0 and 1: every
            epoch serves ``N - round(prune_ratio * N)`` samples, and ``prune_ratio`` is exactly the
            fraction of sample presentations saved over the fit (0.5 when neither it nor
            ``target_saving`` is given).
        target_saving: the fraction of all sample presentations of the fit to skip, in ``(0, 1)``;
            for RS2 the same as ``prune_ratio`` (give one of the two).
        seed: seeds the permutations (``numpy.random.default_rng([seed, STREAM, cycle])``).
    """

    method: ClassVar[str] = "rs2"
    varies_epoch_length: ClassVar[bool] = False

    def __init__(self, prune_ratio: float | None = None, *, target_saving: float | None = None, seed: int = 0) -> None:
        super().__init__()
        refuse_both("RS2", prune_ratio, target_saving)
        self.target_saving = None if target_saving is None else check_target_saving(target_saving, "RS2")
        # every epoch skips exactly its ratio, so a target is the ratio
        ratio = self.target_saving if self.target_saving is not None else prune_ratio
        self.prune_ratio = check_prune_ratio(DEFAULT_PRUNE_RATIO if ratio is None else ratio)
        self.seed = check_seed(seed)
        self.served: dict[int, tuple[int, int]] = {}
        self._trainer: pl.Trainer | None = None
        self._mid_epoch = MidEpochResume("RS2", saves_plan=False)  # plans are a function of (seed, epoch)

    def hparams(self) -> dict[str, Any]:
        """The settings that identify the plans (recorded in the state key)."""
        return {"prune_ratio": self.prune_ratio, "seed": self.seed}

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self.hparams())

    # ------------------------------------------------------------------ planning (the sampler's side)
    @property
    def epochs_collected(self) -> int:
        """Plans depend on the epoch alone (the sampler's cache key reads this)."""
        return 0

    def serving_epoch(self, default: int) -> int:
        """The epoch the training loader is being built or iterated for (the fit loop's count in a fit)."""
        return default if self._trainer is None else fit_epoch(self._trainer)

    def resumed_batches(self, epoch: int) -> int:
        """Batches of ``epoch`` trained before the mid-epoch checkpoint this fit resumed from (else 0)."""
        return self._mid_epoch.batches_done(epoch)

    def plan(self, pool: np.ndarray, epoch: int) -> EpochPlan:
        """The samples of ``pool`` epoch ``epoch`` serves (in pool order), all with weight 1."""
        pool = np.asarray(pool, dtype=np.int64).reshape(-1)
        keep = num_to_keep(pool.size, self.prune_ratio)
        served = pool[np.sort(rs2_positions(pool.size, keep, self.seed, epoch))]
        return EpochPlan(served, np.ones(served.size, dtype=np.float32), pool.size)

    @property
    def fraction_skipped(self) -> float:
        """Of all samples the fit's epochs could have served, the fraction they left out."""
        pool = sum(size for _, size in self.served.values())
        return 0.0 if pool == 0 else 1.0 - sum(kept for kept, _ in self.served.values()) / pool

    def wrap(self, datamodule: pl.LightningDataModule) -> pl.LightningDataModule:
        """``datamodule`` with a training loader this callback plans (see :class:`~lightning_prune.DynamicDataModule`)."""
        from lightning_prune.dynamic.loader import DynamicDataModule

        return DynamicDataModule(datamodule, self)

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._trainer = trainer

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sampler = self._check_sampler(trainer)
        self._mid_epoch.check_layout(sampler.batch_size, sampler.num_replicas)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        plan = self._check_sampler(trainer).epoch_plan()
        self.served[trainer.current_epoch] = (int(plan.indices.size), plan.pool_size)

    def _check_sampler(self, trainer: pl.Trainer) -> Any:
        from lightning_prune.dynamic.loader import planned_sampler

        return planned_sampler(trainer, self)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_epochs is not None and len(self.served) >= trainer.max_epochs:  # a whole fit
            report_saving("RS2", self.target_saving, self.fraction_skipped, "limit_train_batches cut its epochs")

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mid_epoch.epoch_ended(trainer.current_epoch)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._trainer = None

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse a checkpoint written by an RS2 of other settings: Lightning restores a callback's state only
        under its exact ``state_key`` (the settings) and skips it with a warning, so the resumed fit would
        plan other subsets and serve a resumed epoch again from its start."""
        states: dict[str, Any] = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        prefix = type(self).__qualname__ + "{"
        others = [state for key, state in states.items() if key.startswith(prefix) and isinstance(state, dict)]
        if others:
            raise ValueError(
                f"Cannot resume RS2({self.hparams()}) from a checkpoint written by RS2({others[0].get('hparams')}): "
                "create it with the checkpoint's settings to resume the same plans, or fit without ckpt_path."
            )

    @override
    def state_dict(self) -> dict[str, Any]:
        sampler = getattr(self._trainer.train_dataloader, "sampler", None) if self._trainer is not None else None
        planned = getattr(sampler, "planner", None) is self
        return {
            "hparams": self.hparams(),
            "served": {int(epoch): list(sizes) for epoch, sizes in self.served.items()},
            "mid_epoch": self._mid_epoch.capture(self._trainer, sampler if planned else None),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if state_dict.get("hparams") != self.hparams():
            raise ValueError(
                f"Cannot resume RS2({self.hparams()}) from a checkpoint written by RS2({state_dict.get('hparams')}): "
                "create it with the checkpoint's settings to resume the same plans."
            )
        self.served = {int(epoch): (int(kept), int(pool)) for epoch, (kept, pool) in state_dict["served"].items()}
        self._mid_epoch.load(state_dict.get("mid_epoch"))
