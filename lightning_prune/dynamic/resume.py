"""Resuming a dynamic-pruning fit from a checkpoint taken in the middle of an epoch.

Lightning restores the fit loop's batch count from a mid-epoch checkpoint but starts a plain
training loader from its beginning, so the epoch would serve its first batches twice; and an
InfoBatch plan drawn again after the restart would be drawn from losses the epoch's first batches
have already overwritten. A dynamic method therefore checkpoints a :class:`ResumePoint` with its
state: the epoch, how many batches of it were trained, the layout they were dealt in (batch size,
world size) and, where the plan depends on state that changes during the epoch (InfoBatch), the
epoch's plan itself (O(N)). The resumed fit plans that epoch from the saved plan and its sampler
skips the batches already trained, so it serves exactly the rest of the epoch; a resume under
another batch size or world size, which cannot, is refused naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from lightning_prune.trainer_access import batches_processed_this_epoch


@dataclass(frozen=True)
class ResumePoint:
    """Where in its epoch a checkpointed dynamic fit stopped.

    Attributes:
        epoch: the epoch the checkpoint was taken in.
        batches: the batches of it trained (on every rank) when the checkpoint was written.
        batch_size, num_replicas: the layout those batches were dealt in.
        indices, weights: the epoch's plan, where the method saves it (else ``None``: re-planned).
        pool_size: the size of the pool the plan was drawn from.
    """

    epoch: int
    batches: int
    batch_size: int
    num_replicas: int
    indices: np.ndarray | None = None
    weights: np.ndarray | None = None
    pool_size: int = 0

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "batches": self.batches,
            "batch_size": self.batch_size,
            "num_replicas": self.num_replicas,
            "pool_size": self.pool_size,
        }
        if self.indices is not None and self.weights is not None:
            state["indices"] = torch.from_numpy(np.ascontiguousarray(self.indices))
            state["weights"] = torch.from_numpy(np.ascontiguousarray(self.weights))
        return state

    @classmethod
    def from_state(cls, state: Any) -> ResumePoint | None:
        if not state:
            return None
        indices, weights = state.get("indices"), state.get("weights")
        return cls(
            epoch=int(state["epoch"]),
            batches=int(state["batches"]),
            batch_size=int(state["batch_size"]),
            num_replicas=int(state["num_replicas"]),
            indices=None if indices is None else np.asarray(indices, dtype=np.int64),
            weights=None if weights is None else np.asarray(weights, dtype=np.float32),
            pool_size=int(state.get("pool_size", 0)),
        )

    def check_layout(self, owner: str, batch_size: int, num_replicas: int) -> None:
        """Refuse to resume this epoch under another batch size or world size (its rest cannot be found)."""
        if (batch_size, num_replicas) != (self.batch_size, self.num_replicas):
            raise ValueError(
                f"{owner} resumes epoch {self.epoch} after {self.batches} batches of {self.batch_size} samples on "
                f"{self.num_replicas} process(es), but this fit deals batches of {batch_size} on {num_replicas}: "
                "the rest of that epoch's plan cannot be found. Resume with the checkpoint's batch size and number of "
                "devices, or from a checkpoint taken at the end of an epoch (ModelCheckpoint(save_on_train_epoch_end="
                "True) without every_n_train_steps)."
            )


def mid_epoch_point(
    trainer: pl.Trainer | None,
    batch_size: int,
    num_replicas: int,
    plan: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> ResumePoint | None:
    """The :class:`ResumePoint` of a checkpoint written now, or ``None`` outside an epoch or at its end
    (a resume then starts the next epoch, which needs nothing saved)."""
    if trainer is None:
        return None
    total = trainer.num_training_batches
    done = batches_processed_this_epoch(trainer)
    if not (0 < done < total):
        return None
    indices, weights, pool_size = plan if plan is not None else (None, None, 0)
    return ResumePoint(trainer.current_epoch, done, batch_size, num_replicas, indices, weights, pool_size)


class MidEpochResume:
    """A dynamic method's side of a mid-epoch resume: the point a checkpoint saves and a resumed fit follows.

    Args:
        owner: the method's name, for the messages.
        saves_plan: whether the point carries the epoch's plan (for plans drawn from state the epoch changes).
    """

    def __init__(self, owner: str, saves_plan: bool) -> None:
        self.owner = owner
        self.saves_plan = saves_plan
        self.point: ResumePoint | None = None

    def capture(self, trainer: pl.Trainer | None, sampler: Any) -> dict[str, Any] | None:
        """The state to checkpoint now (``None`` unless the fit is inside an epoch); ``sampler`` is the
        fit's :class:`~lightning_prune.DynamicSampler`."""
        if trainer is None or sampler is None:
            return None
        plan = None
        if self.saves_plan:
            epoch_plan = sampler.epoch_plan()
            plan = (epoch_plan.indices, epoch_plan.weights, epoch_plan.pool_size)
        point = mid_epoch_point(trainer, int(sampler.batch_size), int(sampler.num_replicas), plan)
        return None if point is None else point.state()

    def load(self, state: Any) -> None:
        self.point = ResumePoint.from_state(state)

    def batches_done(self, epoch: int) -> int:
        """Batches of ``epoch`` trained before the checkpoint this fit resumed from (0 for any other epoch)."""
        return self.point.batches if self.point is not None and self.point.epoch == epoch else 0

    def saved_plan(self, pool: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The checkpointed plan of ``epoch``, if this fit resumed inside it."""
        point = self.point
        if point is None or point.epoch != epoch or point.indices is None or point.weights is None:
            return None
        if point.pool_size != pool.size or not np.isin(point.indices, pool).all():
            raise ValueError(
                f"{self.owner} resumes epoch {epoch} from a plan over {point.pool_size} samples that this fit's pool "
                f"({pool.size} samples) does not hold. Resume on the data (and selection) the checkpoint was made with."
            )
        return point.indices, point.weights

    def check_layout(self, batch_size: int, num_replicas: int) -> None:
        if self.point is None:
            return
        self.point.check_layout(self.owner, batch_size, num_replicas)

    def epoch_ended(self, epoch: int) -> None:
        """The resumed epoch is over: later epochs are planned and served from their start."""
        if self.point is not None and self.point.epoch <= epoch:
            self.point = None
