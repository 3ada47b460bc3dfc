"""``target_saving=``: asking a dynamic method for the fraction of a fit's sample presentations to skip.

Every dynamic method (:class:`~lightning_prune.InfoBatch`, :class:`~lightning_prune.SeTa`,
:class:`~lightning_prune.RS2`) takes either its native ratio (``prune_ratio``, whose meaning is the
method's own) or ``target_saving``: of the ``N x num_epochs`` presentations full-data epochs would
make, the fraction to leave out. Each method chooses its per-epoch pruning from the target (its
docstring says how) so that the fit ends within :data:`TARGET_TOLERANCE` of it, records what it
reached in ``fraction_skipped`` (counted from the batches that ran) and reports it when the fit ends:
an info line when on target, a warning naming the cause when not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

TARGET_TOLERANCE = 0.01
"""How far (as a fraction of the fit's presentations) a finished fit may end from ``target_saving``."""


def check_target_saving(target_saving: Any, owner: str) -> float:
    """``target_saving`` as a float in ``(0, 1)``, or a clear error naming ``owner``."""
    message = (
        f"{owner} target_saving={target_saving!r} must lie in (0, 1): the fraction of all sample presentations of "
        "the fit to skip (e.g. 0.5 forwards half of what full-data epochs would)."
    )
    if isinstance(target_saving, (bool, np.bool_)) or not isinstance(
        target_saving, (int, float, np.integer, np.floating)
    ):
        raise TypeError(message)
    if not 0.0 < float(target_saving) < 1.0:
        raise ValueError(message)
    return float(target_saving)


def refuse_both(owner: str, prune_ratio: Any, target_saving: Any) -> None:
    """A method takes its native ratio or a target, never both (the target chooses the ratio)."""
    if prune_ratio is not None and target_saving is not None:
        raise ValueError(
            f"{owner} takes prune_ratio={prune_ratio!r} or target_saving={target_saving!r}, not both: target_saving "
            "chooses each epoch's pruning itself."
        )


def epoch_share(
    target_saving: float, epoch: int, epochs: range, pool_size: int, num_epochs: int, planned: Mapping[int, int]
) -> int:
    """How many samples epoch ``epoch`` (one of the epochs that can skip, ``epochs``) should skip.

    The fit's budget of skips, ``round(target_saving x pool_size x num_epochs)``, less what the earlier
    epochs of ``epochs`` planned (``planned[e]``; an epoch missing from it counts as its even share), is
    divided evenly over ``epoch`` and the skipping epochs after it, rounded to a sample; so an epoch
    that planned fewer (a bound it hit) is made up by the later ones.
    """
    budget = round(target_saving * pool_size * num_epochs)
    even = budget / max(1, len(epochs))
    used = sum(planned.get(e, even) for e in epochs if e < epoch)
    left = sum(1 for e in epochs if e >= epoch)
    if left <= 0:
        return 0
    return max(0, round((budget - used) / left))


def report_saving(owner: str, target_saving: float | None, reached: float, shortfall: str) -> None:
    """At the end of a whole fit: the saving reached, against the target if one was given.

    ``shortfall``: why the method may end away from its target, and what to change.
    """
    if target_saving is None:
        rank_zero_info(f"{owner}: skipped {reached:.1%} of the fit's sample presentations.")
        return
    if abs(reached - target_saving) <= TARGET_TOLERANCE:
        rank_zero_info(
            f"{owner}(target_saving={target_saving}): skipped {reached:.1%} of the fit's sample presentations."
        )
        return
    rank_zero_warn(
        f"{owner}(target_saving={target_saving}) skipped {reached:.3f} of the fit's sample presentations, more "
        f"than {TARGET_TOLERANCE:.0%} away from its target: {shortfall} (limit_train_batches, which cuts epochs short, "
        "also moves it)."
    )
