"""The building blocks of the selection strategies: counts, seeded ranking, per-class quotas, CCS.

Both :mod:`~lightning_prune.selection.strategies` (the registry and ``select()``) and
:mod:`~lightning_prune.selection.ratio_aware` (``dual``, ``auto``) build on these, so neither imports
the other's internals.

Every sort breaks ties by a random order drawn from the selection's ``seed`` (:func:`tie_ranks`), never
by index: on a class-sorted data set (as ``ImageFolder`` stores it) tied scores, e.g. forgetting counts
of 0, would otherwise keep the first classes whole and the last ones not at all.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from lightning_prune.selection.meaning import ScoreMeaning
from lightning_prune.selection.scores import Scores

CCS_HARDNESS = ("auto", "accumulated_margin", "low_score", "high_score")
ACCUMULATED_MARGIN = "accumulated_margin"
_TIE_STREAM = 0x7469_6573
"""Second entropy word of the tie-breaking stream, so that it is independent of the draws a strategy
makes from ``seed`` itself (CCS's sampling inside bins keeps the values it had before ties were random)."""


def check_prune_ratio(prune_ratio: float) -> float:
    """Return ``prune_ratio`` as a float, or raise if it is not strictly between 0 and 1."""
    try:
        ratio = float(prune_ratio)
    except (TypeError, ValueError):
        raise TypeError(f"prune_ratio must be a number in (0, 1), got {prune_ratio!r}.") from None
    if not 0.0 < ratio < 1.0:
        raise ValueError(
            f"prune_ratio={prune_ratio} is outside (0, 1). It is the fraction of the training set to "
            "REMOVE: e.g. 0.7 keeps 30% of the samples. Pass a value strictly between 0 and 1."
        )
    return ratio


def check_seed(seed: Any, name: str = "seed") -> int:
    """Return ``seed`` as an int, or raise naming ``name`` if it is not a non-negative integer."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name}={seed!r} must be a non-negative integer (e.g. {name}=0), not {type(seed).__name__}.")
    if seed < 0:
        raise ValueError(f"{name}={seed} must be a non-negative integer (e.g. {name}=0).")
    return int(seed)


def check_positive_number(value: Any, name: str) -> float:
    """``value`` as a finite float > 0, or an error naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}={value!r} must be a positive number, not {type(value).__name__}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive finite number.")
    return float(value)


def check_ccs_beta(beta: Any) -> float:
    if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise TypeError(f"ccs_beta={beta!r} must be a number in [0, 1), not {type(beta).__name__}.")
    if not 0.0 <= beta < 1.0:  # NaN fails here too
        raise ValueError(f"ccs_beta={beta} must be in [0, 1): it is the fraction of hardest samples dropped first.")
    return float(beta)


def check_ccs_bins(bins: Any) -> int:
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, float, np.integer, np.floating)):
        raise TypeError(f"ccs_bins={bins!r} must be a positive integer, not {type(bins).__name__}.")
    if not math.isfinite(bins) or int(bins) != bins or bins < 1:
        raise ValueError(f"ccs_bins={bins} must be a positive integer.")
    return int(bins)


def check_ccs_hardness(hardness: Any) -> str:
    if hardness not in CCS_HARDNESS:
        raise ValueError(f"ccs_hardness={hardness!r} is not one of {list(CCS_HARDNESS)}.")
    return str(hardness)


def num_to_keep(num_samples: int, prune_ratio: float) -> int:
    """How many samples a pruning ratio keeps: ``N - round(prune_ratio * N)``; at least one."""
    ratio = check_prune_ratio(prune_ratio)
    num_samples = int(num_samples)
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}.")
    keep = num_samples - int(round(ratio * num_samples))
    if keep == num_samples:
        warnings.warn(
            f"prune_ratio={prune_ratio} removes no sample of {num_samples} (round({ratio} * {num_samples}) = 0): "
            "the selection is the whole data set. Raise the ratio to prune.",
            UserWarning,
            stacklevel=3,
        )
    if keep < 1:
        raise ValueError(
            f"prune_ratio={prune_ratio} removes all {num_samples} samples (round({ratio} * {num_samples}) = "
            f"{num_samples}); lower the ratio so that at least one sample is kept."
        )
    return keep


def kept_ratio_removed(num_samples: int, num_keep: int) -> float:
    """The fraction a selection of ``num_keep`` of ``num_samples`` actually removes (DUAL's ``r``)."""
    return 1.0 - num_keep / num_samples


def tie_ranks(num_samples: int, seed: int) -> np.ndarray:
    """A random rank per sample index, drawn from ``seed``: the order among equal scores."""
    return np.random.default_rng(np.random.SeedSequence([seed, _TIE_STREAM])).permutation(num_samples)


def ranked(values: np.ndarray, candidates: np.ndarray, seed: int) -> np.ndarray:
    """``candidates`` ordered by descending ``values``, ties in the seeded random order of :func:`tie_ranks`."""
    ties = tie_ranks(values.size, seed)
    return candidates[np.lexsort((ties[candidates], -values[candidates]))]


def top(values: np.ndarray, num_keep: int, seed: int) -> np.ndarray:
    """The ``num_keep`` highest ``values`` (ties at random, from ``seed``)."""
    return ranked(np.asarray(values, dtype=np.float64), np.arange(np.size(values)), seed)[:num_keep]


def random_indices(num_samples: int, num_keep: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(num_samples, size=num_keep, replace=False)


def class_quotas(labels: np.ndarray, num_keep: int, seed: int | None = None) -> dict[int, int]:
    """Per-class kept counts proportional to class sizes, summing exactly to ``num_keep``.

    Largest-remainder rounding: each class first gets ``floor(n_c * num_keep / N)``; the samples
    still missing go one each to the classes with the largest fractional parts (ties: in a random
    order of the classes drawn from ``seed``; lower class id first when ``seed`` is ``None``).
    """
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    exact = counts * (num_keep / counts.sum())
    quotas = np.floor(exact).astype(np.int64)
    missing = int(num_keep - quotas.sum())
    if missing > 0:
        ties = classes if seed is None else tie_ranks(classes.size, seed)
        order = np.lexsort((ties, -(exact - quotas)))
        quotas[order[:missing]] += 1
    return {int(c): int(q) for c, q in zip(classes, quotas, strict=True)}


def classes_left_empty(labels: np.ndarray, num_keep: int, seed: int) -> str | None:
    """Why keeping ``num_keep`` per class is impossible (a class would keep nothing), or ``None``; ``seed``
    breaks the ties of :func:`class_quotas` as :func:`class_balanced` does."""
    quotas = class_quotas(labels, num_keep, seed)
    empty = sorted(c for c, q in quotas.items() if q == 0)
    if not empty:
        return None
    sizes = {c: int((labels == c).sum()) for c in empty[:5]}
    more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
    return (
        f"keeping {num_keep} of {labels.size} samples would keep no sample of class(es) {empty[:5]}{more} "
        f"(class sizes {sizes})"
    )


def class_balanced(values: np.ndarray, labels: np.ndarray, num_keep: int, seed: int) -> np.ndarray:
    """The highest ``values`` within each class, every class keeping its share (:func:`class_quotas`)."""
    values = np.asarray(values, dtype=np.float64)
    quotas = class_quotas(labels, num_keep, seed)
    kept = [ranked(values, np.flatnonzero(labels == c), seed)[:q] for c, q in quotas.items()]
    return np.concatenate(kept)


def ccs_bin_budgets(bin_sizes: np.ndarray, budget: int) -> np.ndarray:
    """CCS budget allocation: visit bins from smallest to largest (ties: lower bin first), giving
    each ``min(bin size, remaining budget // bins left)``. Returns the budget of each bin."""
    sizes = np.asarray(bin_sizes, dtype=np.int64)
    budgets = np.zeros_like(sizes)
    remaining = int(budget)
    order = np.argsort(sizes, kind="stable")
    for visited, b in enumerate(order):
        take = min(int(sizes[b]), remaining // (len(order) - visited))
        budgets[b] = take
        remaining -= take
    return budgets


def resolve_ccs_hardness(scores: Scores, hardness: str, beta: float) -> str | None:
    """The hardness source ``hardness`` names for these scores, read from their meaning.

    ``None`` where no cut-off is made (``beta == 0``) and the scores have no hard end (preference).
    Refuses an end that contradicts the declared meaning, and ``"auto"`` on preference scores with a cut-off.
    """
    hardness = check_ccs_hardness(hardness)
    meaning, method = scores.meaning, scores.method
    has_margin = ACCUMULATED_MARGIN in scores.extras
    if hardness == ACCUMULATED_MARGIN and not has_margin:
        raise ValueError(
            f"ccs_hardness='accumulated_margin' needs scores carrying extras['accumulated_margin'] (AUM "
            f"scores do); these {method} scores have extras {sorted(scores.extras)}. Use "
            "ccs_hardness='low_score' or 'high_score'."
        )
    contradicts = {"high_score": ScoreMeaning.EASINESS, "low_score": ScoreMeaning.DIFFICULTY}
    if contradicts.get(hardness) == meaning:
        end = "low" if meaning == ScoreMeaning.EASINESS else "high"
        raise ValueError(
            f"ccs_hardness={hardness!r} calls the {'highest' if hardness == 'high_score' else 'lowest'} scores the "
            f"hardest, but these {method} scores mean {meaning.value!r} (higher = "
            f"{'easier' if meaning == ScoreMeaning.EASINESS else 'harder'}): their hard end is the {end} scores. "
            f"Use ccs_hardness='auto' (or '{end}_score'), or build the Scores with the meaning they have "
            "(Scores(..., meaning='difficulty' | 'easiness' | 'preference'))."
        )
    if hardness != "auto":
        return hardness
    if has_margin:  # the lowest margin is the hardest whatever the values mean
        return ACCUMULATED_MARGIN
    if meaning == ScoreMeaning.DIFFICULTY:
        return "high_score"
    if meaning == ScoreMeaning.EASINESS:
        return "low_score"
    if beta == 0:
        return None
    raise ValueError(
        f"ccs_hardness='auto' cuts off the hardest samples, but these {method} scores mean 'preference' (higher = "
        "keep, not harder): they have no hard end. Use ccs_beta=0 (coverage sampling without a cut-off), or name "
        "the end to cut yourself with ccs_hardness='low_score' or 'high_score'."
    )


def ccs_hardness_values(scores: Scores, source: str | None) -> np.ndarray:
    """Per-sample hardness, higher = harder, from a resolved source (zeros where there is none)."""
    if source == ACCUMULATED_MARGIN:
        return -np.asarray(scores.extras[ACCUMULATED_MARGIN], dtype=np.float64).reshape(len(scores))
    if source == "low_score":
        return -scores.values
    if source == "high_score":
        return scores.values.copy()
    return np.zeros(len(scores))


def ccs(scores: Scores, num_keep: int, seed: int, *, beta: float, bins: int, hardness: str | None) -> np.ndarray:
    """Coverage-centric selection with a resolved hardness source (see :func:`resolve_ccs_hardness`)."""
    num_samples = len(scores)
    num_hard = int(round(beta * num_samples))
    if num_hard + num_keep > num_samples:
        raise ValueError(
            f"ccs_beta={beta} drops the {num_hard} hardest samples first, leaving {num_samples - num_hard}, "
            f"fewer than the {num_keep} to keep. The hard cut-off plus the coreset cannot exceed the data "
            f"set: use ccs_beta <= prune_ratio ({(num_samples - num_keep) / num_samples:.4g})."
        )
    hard = ccs_hardness_values(scores, hardness)
    by_hardness = ranked(hard, np.arange(num_samples), seed)  # hardest first, ties at random
    pool = np.sort(by_hardness[num_hard:])
    values = scores.values[pool]
    low, high = float(values.min()), float(values.max())
    if high > low:
        # The last bin is closed on the right so the maximum falls inside it.
        bin_of = np.minimum(((values - low) / (high - low) * bins).astype(np.int64), bins - 1)
    else:
        bin_of = np.zeros(values.size, dtype=np.int64)
    sizes = np.bincount(bin_of, minlength=bins)
    budgets = ccs_bin_budgets(sizes, num_keep)
    if budgets.sum() != num_keep:  # cannot happen when the pool is large enough; guards the invariant
        raise RuntimeError(f"CCS allocated {budgets.sum()} samples instead of {num_keep}; please report this.")
    rng = np.random.default_rng(seed)
    kept = [rng.choice(pool[bin_of == b], size=int(budgets[b]), replace=False) for b in range(bins) if budgets[b]]
    return np.concatenate(kept)
