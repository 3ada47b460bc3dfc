"""``SeTa``: scale-efficient training by sliding windows over loss groups (Zhou et al., CVPR 2025).

Every sample keeps its latest training loss (samples not served yet count with ``initial_loss``).
Each epoch ``e`` of the first ``floor(delta * num_epochs)`` ("pruned" epochs):

1. a uniform random subset of ``int(N * keep_ratio)`` samples of the pool is drawn
   (``keep_ratio = 1 - prune_ratio``: the random part of the pruning);
2. the subset's losses are grouped by k-means into ``num_group`` groups (scikit-learn's
   ``KMeans(n_clusters=num_group, random_state=0)`` on the 1-D losses, in the order drawn), the
   groups ordered from the lowest mean loss (easiest) to the highest;
3. a window of ``W = round(G * window_scale)`` consecutive groups (``G`` the number of groups) is
   served: groups ``start .. start + W - 1`` with ``start = e % (G - W + 1)``, so the window slides
   from the easiest groups to the hardest and starts over. Epoch 0 serves the whole subset.

The remaining epochs ("annealing") serve a uniform random ``int(N * keep_ratio)`` of the pool
(the official "partial annealing"). Every served sample has loss weight 1: SeTa does not rescale
the loss (the official ``update`` multiplies by weights that stay 1), so a loss that ignores the
batch's weights is right here, and the weight check :class:`~lightning_prune.InfoBatch` runs is not
run. The fraction of presentations skipped is ``1 - keep_ratio`` in epoch 0 and while annealing,
and ``1 - keep_ratio x`` (the window's share of the subset) in the other epochs.

``target_saving=`` asks for a fraction of all sample presentations of the fit to skip instead of a
``prune_ratio``. The window is left as set; each epoch's ``keep_ratio`` is chosen when its plan is
made: the presentations still allowed, ``(1 - target_saving) x N x num_epochs`` less what the
earlier epochs planned, are divided evenly over the remaining epochs, each weighted by the share of
its subset it will serve (1 for epoch 0 and the annealing epochs, which is exact; for a windowed
epoch, the share measured the last time the window stood at the same position, else the mean of the
measured shares, else ``W / G``). The estimate errs only in windowed epochs, and every later epoch
(the annealing ones last, which serve exactly ``int(N x keep_ratio)``) re-divides what is left, so
the fit ends on its target to within a sample unless ``keep_ratio`` has to leave ``[0.1, 1]``: a
target below what the window alone skips with ``keep_ratio = 1`` cannot be met (raise
``window_scale``), nor one above what ``keep_ratio = 0.1`` gives. The plan sizes are kept in
``state_dict()``, so a resumed fit chooses the same ratios. :attr:`fraction_skipped` reports what
was reached (a warning names the cause when a finished fit is more than a point away).

The machinery is :class:`~lightning_prune.InfoBatch`'s (this class extends it): the losses are
per-sample collector state written on the device without a host synchronisation, exchanged across
DDP ranks at the end of every epoch and checkpointed; the plan of epoch ``e`` is computed by every
rank from the same losses and ``numpy.random.default_rng([seed, e])``, so the ranks serve equal
shares of one plan and a resumed fit the plans of an uninterrupted one; the same checks apply (a
per-sample ``loss_fn``, finite losses, the wrapped data module fitted with this callback, schedules
and trainer settings that assume fixed-length epochs).

Where this differs from the official code (mrazhou/SeTa, ``seta.py``), and why:

* the random draws (the subset, the annealing subset, the fallback sample) come from
  ``numpy.random.default_rng([seed, epoch])`` instead of the global ``torch``/NumPy generators
  (seeded, in the official sampler, with the epoch count alone, and in one process ``torch``'s not at
  all): plans differ draw for draw, each draw has the same distribution, and a plan is a function of
  the losses, ``seed`` and the epoch;
* ``KMeans`` runs with ``n_init=1`` spelled out: the official call takes the installed
  scikit-learn's default, which is 1 since scikit-learn 1.4 and was 10 before;
* when the subset holds fewer distinct losses than ``num_group`` (k-means would leave clusters
  empty, which the official code then orders by a ``NaN`` mean, arbitrarily), each distinct loss is
  a group, and the window is ``max(1, round(G * window_scale))`` of those ``G`` groups (the official
  ``round`` may give 0 there and fail an assertion). All-equal losses are split into equal chunks
  in the order drawn (``torch.chunk``), as the official code does;
* the settings are checked up front: ``prune_ratio`` above 0.9 is refused (the official code clamps
  ``keep_ratio`` to 0.1 silently), as are a window of no group, and a subset too small for
  ``num_group`` groups (an assertion there);
* samples never served count with ``initial_loss`` (the official code's 3, on a cross-entropy's
  scale: unseen samples then count as hard). For a loss on another scale, set it above what a
  trained-for-one-epoch model gives;
* over a :class:`~lightning_prune.PrunedDataModule` the pool is the static selection, not the
  whole data set;
* the losses are exchanged across DDP ranks once per epoch (the official ``update`` gathers every
  batch's, a host synchronisation per batch): plans read the losses only when an epoch starts, so
  they are the same; samples never served again keep their last loss in both;
* under DDP each epoch's plan is padded to a multiple of the world size with its first entries (the
  official ``DistributedIBSampler`` drops the tail, ``drop_last=True``), so no planned sample is lost;
* the saving is counted from the batches that ran (:attr:`~InfoBatch.fraction_skipped`, which
  ``limit_train_batches`` moves), the official ``get_saved_ratio`` from the plans;
* the subset-larger-than-``num_group`` check runs only in windowed epochs (the official assertion
  also fires in epoch 0, whose equal initial losses are chunked, not clustered);
* ``target_saving`` is this library's addition (the official code takes ``prune_ratio`` only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_prune.collectors.arguments import is_integer
from lightning_prune.collectors.base import BatchAdapter
from lightning_prune.dynamic.infobatch import (
    MAX_PRUNE_RATIO,
    EpochPlan,
    InfoBatch,
    LossFunction,
    _check_delta,
    _check_num_epochs,
)
from lightning_prune.dynamic.target import check_target_saving, refuse_both
from lightning_prune.selection.strategies import check_seed

MIN_KEEP_RATIO = 1.0 - MAX_PRUNE_RATIO
"""The smallest random subset an epoch draws (the official code clamps ``keep_ratio`` there too)."""

INITIAL_LOSS = 3.0
"""The loss the official code gives every sample before it is first served."""


def seta_groups(losses: np.ndarray, num_group: int) -> list[np.ndarray]:
    """Positions into ``losses`` (one subset, in the order drawn), grouped by k-means, easiest group first.

    ``num_group == 1``: one group. All losses equal: ``num_group`` chunks of ``ceil(n / num_group)``
    in the given order (``torch.chunk``; possibly fewer chunks). Fewer distinct losses than groups:
    one group per distinct loss. Otherwise ``KMeans(num_group, random_state=0, n_init=1)`` on the
    ``float32`` losses, the clusters ordered by their mean loss.
    """
    losses = np.asarray(losses, dtype=np.float32).reshape(-1)
    size = losses.size
    if num_group == 1:
        return [np.arange(size)]
    if losses.max() == losses.min():
        chunk = -(-size // num_group)
        return [np.arange(start, min(start + chunk, size)) for start in range(0, size, chunk)]
    distinct, labels = np.unique(losses, return_inverse=True)
    if distinct.size < num_group:
        # np.unique orders the values, so the labels already run from easiest to hardest
        labels = labels.reshape(-1)
    else:
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=num_group, random_state=0, n_init=1).fit(losses[:, None]).labels_
    count = int(labels.max()) + 1
    sums = np.bincount(labels, weights=losses.astype(np.float64), minlength=count)
    sizes = np.bincount(labels, minlength=count)
    present = np.flatnonzero(sizes)
    # 1-D k-means clusters are intervals, so their means order them without ties
    ordered = present[np.argsort(sums[present] / sizes[present], kind="stable")]
    by_label = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [by_label[bounds[label] : bounds[label + 1]] for label in ordered]


def window_size(num_groups: int, window_scale: float) -> int:
    """How many consecutive groups a window spans: ``round(num_groups * window_scale)``, at least 1."""
    return max(1, round(num_groups * window_scale))


def seta_window(num_groups: int, iteration: int, window_scale: float) -> range:
    """The groups epoch ``iteration`` serves: all in epoch 0, then a window sliding from easy to hard."""
    if iteration == 0:
        return range(num_groups)
    width = window_size(num_groups, window_scale)
    start = iteration % (num_groups - width + 1)
    return range(start, start + width)


def seta_plan(
    pool: np.ndarray,
    losses: np.ndarray,
    epoch: int,
    keep_ratio: float,
    num_group: int,
    window_scale: float,
    annealing: bool,
    rng: np.random.Generator,
) -> tuple[EpochPlan, int]:
    """One epoch of SeTa over ``pool`` (``losses`` aligned with it); also the size of the random subset.

    The plan lists the served samples in pool order, every one with weight 1.
    """
    pool = np.asarray(pool, dtype=np.int64).reshape(-1)
    size = int(pool.size * keep_ratio)
    if size < 1:
        raise ValueError(
            f"SeTa: keep_ratio={keep_ratio:.3g} of a pool of {pool.size} samples draws no sample; lower prune_ratio."
        )
    subset = rng.permutation(pool.size)[:size]
    if annealing or epoch == 0:
        served = subset
    else:
        if size <= num_group:
            raise ValueError(
                f"SeTa(num_group={num_group}) groups the {size} samples of epoch {epoch}'s random subset "
                f"(int({pool.size} x keep_ratio {keep_ratio:.3g})), which must outnumber the groups: lower "
                "num_group or prune_ratio."
            )
        groups = seta_groups(np.asarray(losses)[subset], num_group)
        window = seta_window(len(groups), epoch, window_scale)
        served = subset[np.concatenate([groups[g] for g in window])]
        if served.size == 0:
            served = rng.integers(pool.size, size=1)  # the official fallback: one random sample
    served = np.sort(served)
    return EpochPlan(pool[served], np.ones(served.size, dtype=np.float32), pool.size), size


def target_keep_ratio(
    target_saving: float,
    epoch: int,
    num_epochs: int,
    pruned_epochs: int,
    pool_size: int,
    history: Mapping[int, tuple[int, int]],
    num_group: int,
    window_scale: float,
) -> float:
    """The ``keep_ratio`` of ``epoch`` that puts the fit on ``target_saving`` (see the module docs).

    ``history[e] = (subset size, samples served)`` of the epochs planned so far; an epoch missing from
    it counts as on target.
    """
    width = window_size(num_group, window_scale)
    positions = num_group - width + 1

    def windowed(e: int) -> bool:
        return 0 < e < pruned_epochs

    budget = (1.0 - target_saving) * pool_size * num_epochs
    used = sum(history[e][1] if e in history else (1.0 - target_saving) * pool_size for e in range(epoch))
    measured = {e: history[e][1] / history[e][0] for e in range(epoch) if e in history and windowed(e)}
    mean_share = sum(measured.values()) / len(measured) if measured else width / num_group

    def share(e: int) -> float:
        if not windowed(e):
            return 1.0
        same_place = [s for past, s in measured.items() if past % positions == e % positions]
        return same_place[-1] if same_place else mean_share

    weight = sum(share(e) for e in range(epoch, num_epochs))
    if weight <= 0.0:
        return 1.0
    return min(1.0, max(MIN_KEEP_RATIO, (budget - used) / (pool_size * weight)))


def _check_seta_ratio(prune_ratio: Any) -> float:
    message = (
        f"SeTa prune_ratio={prune_ratio!r} must lie in [0, {MAX_PRUNE_RATIO}]: each epoch first draws a random "
        "1 - prune_ratio of the samples (0: all of them; the window alone prunes), then serves a window of "
        "their loss groups."
    )
    if isinstance(prune_ratio, (bool, np.bool_)) or not isinstance(prune_ratio, (int, float, np.integer, np.floating)):
        raise TypeError(message)
    if not 0.0 <= float(prune_ratio) <= MAX_PRUNE_RATIO:
        raise ValueError(message)
    return float(prune_ratio)


def _check_num_group(num_group: Any) -> int:
    message = f"SeTa num_group={num_group!r} must be a positive integer: the number of loss groups (official: 10)."
    if not is_integer(num_group):
        raise TypeError(message)
    if num_group < 1:
        raise ValueError(message)
    return int(num_group)


def _check_window_scale(window_scale: Any, num_group: int) -> float:
    message = (
        f"SeTa window_scale={window_scale!r} must lie in (0, 1] and span at least one of the num_group={num_group} "
        "groups (round(num_group * window_scale) >= 1): the fraction of the groups each epoch serves."
    )
    if isinstance(window_scale, (bool, np.bool_)) or not isinstance(
        window_scale, (int, float, np.integer, np.floating)
    ):
        raise TypeError(message)
    if not 0.0 < float(window_scale) <= 1.0 or round(num_group * float(window_scale)) < 1:
        raise ValueError(message)
    return float(window_scale)


def _check_initial_loss(initial_loss: Any) -> float:
    message = f"SeTa initial_loss={initial_loss!r} must be a finite number: the loss unseen samples count with."
    if isinstance(initial_loss, (bool, np.bool_)) or not isinstance(
        initial_loss, (int, float, np.integer, np.floating)
    ):
        raise TypeError(message)
    if not math.isfinite(float(initial_loss)):
        raise ValueError(message)
    return float(initial_loss)


class SeTa(InfoBatch):
    """Dynamic pruning callback: a random subset, grouped by loss, a window sliding from easy to hard groups.

    Use it as :class:`~lightning_prune.InfoBatch` is used (see the module docs for the rule)::

        seta = lp.SeTa(prune_ratio=0.3, num_group=10, window_scale=0.5)   # or lp.SeTa(target_saving=0.5)
        trainer = pl.Trainer(max_epochs=30, callbacks=[seta])
        trainer.fit(model, datamodule=seta.wrap(dm))   # dm may be a PrunedDataModule

    Batches carry a weight of 1 as their fourth element (dicts: ``"weight"``), so the ``training_step``
    that serves InfoBatch serves SeTa; ``training_step`` returns ``{"loss", "logits"}`` and the loss
    recorded per sample is ``loss_fn(logits, targets)``.

    Args:
        prune_ratio: the share of the pool each epoch leaves out before grouping, in ``[0, 0.9]``
            (official default 0: only the window prunes). Leave it unset with ``target_saving``.
        num_group: how many loss groups k-means forms (official default 10).
        window_scale: the share of the groups a window spans, in ``(0, 1]`` (official default 0.5;
            the paper's ImageNet runs 0.6 and CIFAR runs 0.9 with 5 groups).
        delta: the first ``floor(delta * num_epochs)`` epochs slide the window, the rest anneal
            (a random ``1 - prune_ratio`` of the pool); in ``(0, 1]``.
        target_saving: the fraction of all sample presentations of the fit to skip, in ``(0, 1)``,
            instead of ``prune_ratio`` (each epoch's ratio is then chosen to reach it; module docs).
        num_epochs: the length of training the annealing and ``target_saving`` refer to;
            ``Trainer.max_epochs`` if omitted.
        seed: seeds each epoch's draws (``numpy.random.default_rng([seed, epoch])``).
        loss_fn: ``loss_fn(logits, targets) -> [B]`` per-sample losses; cross-entropy by default.
        initial_loss: the loss samples never served count with (the official 3).
        adapter, num_samples, save_path, name: as for every :class:`~lightning_prune.ScoreCollector`.
    """

    method: ClassVar[str] = "seta"
    nonfinite_harm: ClassVar[str] = "A NaN or inf loss cannot be grouped by k-means."

    def __init__(
        self,
        prune_ratio: float | None = None,
        num_group: int = 10,
        window_scale: float = 0.5,
        delta: float = 0.875,
        *,
        target_saving: float | None = None,
        num_epochs: int | None = None,
        seed: int = 0,
        loss_fn: LossFunction | None = None,
        initial_loss: float = INITIAL_LOSS,
        adapter: BatchAdapter | None = None,
        num_samples: int | None = None,
        save_path: str | None = None,
        name: str | None = None,
    ) -> None:
        refuse_both("SeTa", prune_ratio, target_saving)
        ratio = None if prune_ratio is None else _check_seta_ratio(prune_ratio)
        target = None if target_saving is None else check_target_saving(target_saving, "SeTa")
        groups = _check_num_group(num_group)
        scale = _check_window_scale(window_scale, groups)
        delta_value = _check_delta(delta, "SeTa")
        epochs = None if num_epochs is None else _check_num_epochs(num_epochs, "SeTa")
        seed_value = check_seed(seed, "seed")
        start = _check_initial_loss(initial_loss)
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(
                f"SeTa loss_fn={loss_fn!r} must be a function loss_fn(logits, targets) -> per-sample losses [B], "
                'e.g. lambda logits, y: F.cross_entropy(logits, y, reduction="none").'
            )
        super().__init__(
            delta=delta_value,
            num_epochs=epochs,
            seed=seed_value,
            loss_fn=loss_fn,
            check_weighting=False,  # every weight is 1: there is no rescaling to check
            adapter=adapter,
            num_samples=num_samples,
            save_path=save_path,
            name=name,
        )
        # None: target_saving chooses each epoch's ratio
        self.prune_ratio = ratio if ratio is not None or target is not None else 0.0
        self.num_group = groups
        self.window_scale = scale
        self.target_saving = target
        self.initial_loss = start

    @property
    def keep_ratio(self) -> float:
        """The share of the pool each epoch draws before grouping, ``1 - prune_ratio`` (with ``prune_ratio``)."""
        return 1.0 - (self.prune_ratio or 0.0)

    # ------------------------------------------------------------------ planning
    @override
    def _reset(self) -> None:
        super()._reset()
        self.planned: dict[int, tuple[int, int]] = {}  # epoch -> (random subset size, samples served)

    def epoch_keep_ratio(self, epoch: int, pool_size: int, max_epochs: int | None = None) -> float:
        """The share of the pool ``epoch`` draws: ``1 - prune_ratio``, or the ratio ``target_saving`` asks for."""
        if self.target_saving is None:
            return self.keep_ratio
        total = self.num_epochs if self.num_epochs is not None else max_epochs
        pruned = self.pruned_epochs(max_epochs)
        assert total is not None  # pruned_epochs refused a fit without a length
        return target_keep_ratio(
            self.target_saving, epoch, total, pruned, pool_size, self.planned, self.num_group, self.window_scale
        )

    @override
    def plan(self, pool: np.ndarray, epoch: int) -> EpochPlan:
        """The samples of ``pool`` epoch ``epoch`` serves, all with weight 1 (identical on every rank)."""
        pool = np.asarray(pool, dtype=np.int64).reshape(-1)
        max_epochs = self._trainer.max_epochs if self._trainer is not None else None
        annealing = epoch >= self.pruned_epochs(max_epochs)
        keep = self.epoch_keep_ratio(epoch, pool.size, max_epochs)
        losses = np.full(pool.size, self.initial_loss, dtype=np.float32)
        if self._buffers:
            rows = torch.as_tensor(pool, device=self._buffers["loss"].device)
            seen = (self._buffers["times_seen"][rows] > 0).cpu().numpy()
            losses[seen] = self._buffers["loss"][rows].float().cpu().numpy()[seen]
        rng = np.random.default_rng([self.seed, epoch])
        plan, subset = seta_plan(pool, losses, epoch, keep, self.num_group, self.window_scale, annealing, rng)
        self.planned[int(epoch)] = (subset, int(plan.indices.size))  # a function of the state: planning again agrees
        return plan

    @override
    def _least_served(self, pool: int) -> int:
        """A window may hold as little as one sample (k-means groups have no lower size)."""
        return 1

    @override
    def check_length(self, max_epochs: int | None) -> None:
        """Refuse a fit that can never prune; warn about one that stops before annealing."""
        pruned = self.pruned_epochs(max_epochs)
        total = self.num_epochs if self.num_epochs is not None else max_epochs
        if pruned < 2 and self.target_saving is None and not self.prune_ratio:
            source = f"num_epochs={total}" if self.num_epochs is not None else f"max_epochs={total}"
            need = next(n for n in range(2, 10_000) if math.floor(self.delta * n + 1e-9) >= 2)
            raise ValueError(
                f"SeTa(prune_ratio=0, delta={self.delta}) over {source} never prunes: with prune_ratio=0 only the "
                f"window prunes, from epoch 1 until epoch floor(delta * {total}) = {pruned}. Train for at least "
                f"{need} epochs, or give a prune_ratio or target_saving."
            )
        if max_epochs is not None and 0 < max_epochs <= pruned and self.delta < 1.0:
            rank_zero_warn(
                f"SeTa(num_epochs={total}, delta={self.delta}) anneals from epoch {pruned} on, but the Trainer stops "
                f"after max_epochs={max_epochs}: this fit never anneals. Omit num_epochs (it follows max_epochs), "
                f"unless you will resume this fit to {total} epochs."
            )

    @override
    def target_shortfall(self) -> str:
        return (
            "an epoch's share of samples drawn reached its bound: 1 (the window alone skips more than the target; "
            "raise window_scale) or 0.1 (lower target_saving)"
        )

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if state:
            state["planned"] = {int(epoch): list(sizes) for epoch, sizes in self.planned.items()}
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict:
            self.planned = {int(epoch): (int(a), int(b)) for epoch, (a, b) in state_dict["planned"].items()}
