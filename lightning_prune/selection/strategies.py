"""Selection strategies: turn per-sample :class:`Scores` into a :class:`Selection` at a pruning ratio.

``prune_ratio`` is always the fraction of the training set REMOVED: at ratio r, ``round(r * N)``
samples are dropped and ``N - round(r * N)`` kept (Python's ``round``, as everywhere in the library).

Strategies (all deterministic for a given ``seed``):

``topk``
    The ``N - round(rN)`` highest scores, globally. Equal scores are broken by index, lower index
    first, so the result never depends on sort stability or platform.
``random``
    A uniform random subset drawn from ``seed``; ignores the score values. Without any scores, use
    :func:`random_selection`.
``class_balanced``
    Top scores within each class; every class keeps its share of the data set (largest-remainder
    rounding so the total is exact). Needs labels; a class whose share rounds to zero is an error.
``ccs``
    Coverage-centric coreset selection (Zheng et al., ICLR 2023): drop the hardest ``ccs_beta``
    fraction of the whole data set, split the remaining score range into ``ccs_bins`` equal-width
    bins, give bins budgets smallest bin first (``min(bin size, remaining budget // bins left)``)
    and sample uniformly inside each bin.

``dual``, ``auto``
    Ratio-aware: DUAL's Beta sampling, and the library's recommended default (from a ratio of 0.8 the
    easiest samples of each class; below, DUAL's sampling for DUAL scores and CCS with a
    ratio-dependent hard cut-off otherwise); see :mod:`lightning_prune.selection.ratio_aware`.

``weights="importance"`` attaches TDDS's importance weights (paper Eq. 13): the scores min-max
normalised over all N samples to [0, 1]; each kept sample's weight is its normalised score. (When
all N scores are equal every weight is 1.) :class:`~lightning_prune.PrunedDataModule` with
``weighted=True`` hands them to the model.

The strategies live in :data:`STRATEGIES`; a custom one is a function
``fn(scores: Scores, num_keep: int, seed: int, **options) -> np.ndarray`` (kept indices) added
under a new name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from lightning_prune.selection import ratio_aware
from lightning_prune.selection.files import label_fingerprint
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection

StrategyFn = Callable[..., np.ndarray]

CCS_HARDNESS = ("auto", "accumulated_margin", "low_score", "high_score")
WEIGHT_SCHEMES = ("importance",)


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


def _ranked(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``candidates`` ordered by descending score, ties by ascending index."""
    return candidates[np.lexsort((candidates, -values[candidates]))]


def _topk(scores: Scores, num_keep: int, seed: int) -> np.ndarray:
    return _ranked(scores.values, np.arange(len(scores)))[:num_keep]


def _random(scores: Scores, num_keep: int, seed: int) -> np.ndarray:
    return _random_indices(len(scores), num_keep, seed)


def _random_indices(num_samples: int, num_keep: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(num_samples, size=num_keep, replace=False)


def class_quotas(labels: np.ndarray, num_keep: int) -> dict[int, int]:
    """Per-class kept counts proportional to class sizes, summing exactly to ``num_keep``.

    Largest-remainder rounding: each class first gets ``floor(n_c * num_keep / N)``; the samples
    still missing go one each to the classes with the largest fractional parts (ties: lower class id).
    """
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    exact = counts * (num_keep / counts.sum())
    quotas = np.floor(exact).astype(np.int64)
    missing = int(num_keep - quotas.sum())
    if missing > 0:
        order = np.lexsort((classes, -(exact - quotas)))
        quotas[order[:missing]] += 1
    return {int(c): int(q) for c, q in zip(classes, quotas, strict=True)}


def _class_balanced(scores: Scores, num_keep: int, seed: int) -> np.ndarray:
    if scores.labels is None:
        raise ValueError(
            f"strategy='class_balanced' needs the training labels, but these {scores.method} scores carry "
            "none. Create the Scores with labels=... (collectors record them), or use strategy='topk'."
        )
    labels = scores.labels
    quotas = class_quotas(labels, num_keep)
    empty = sorted(c for c, q in quotas.items() if q == 0)
    if empty:
        sizes = {c: int((labels == c).sum()) for c in empty}
        raise ValueError(
            f"strategy='class_balanced' would keep no sample of class(es) {empty} (class sizes {sizes}) when "
            f"keeping {num_keep} of {labels.size} samples. Lower prune_ratio, or use strategy='topk'."
        )
    kept = [_ranked(scores.values, np.flatnonzero(labels == c))[:q] for c, q in quotas.items()]
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


def _resolve_ccs_hardness(scores: Scores, hardness: str) -> str:
    """The hardness source ``hardness`` names for these scores (``"auto"`` resolved), validated."""
    if hardness not in CCS_HARDNESS:
        raise ValueError(f"ccs_hardness={hardness!r} is not one of {list(CCS_HARDNESS)}.")
    if hardness == "auto":
        # every difficulty score of the library is oriented harder = higher (= keep)
        return "accumulated_margin" if "accumulated_margin" in scores.extras else "high_score"
    if hardness == "accumulated_margin" and "accumulated_margin" not in scores.extras:
        raise ValueError(
            f"ccs_hardness='accumulated_margin' needs scores carrying extras['accumulated_margin'] (AUM "
            f"scores do); these {scores.method} scores have extras {sorted(scores.extras)}. Use "
            "ccs_hardness='low_score' or 'high_score'."
        )
    return hardness


def _ccs_hardness(scores: Scores, hardness: str) -> np.ndarray:
    """Per-sample hardness, higher = harder, from the source ``hardness`` names."""
    source = _resolve_ccs_hardness(scores, hardness)
    if source == "accumulated_margin":
        return -np.asarray(scores.extras["accumulated_margin"], dtype=np.float64).reshape(len(scores))
    if source == "low_score":
        return -scores.values
    return scores.values.copy()


def _ccs(
    scores: Scores,
    num_keep: int,
    seed: int,
    *,
    beta: float = 0.0,
    bins: int = 50,
    hardness: str = "auto",
) -> np.ndarray:
    num_samples = len(scores)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"ccs_beta={beta} must be in [0, 1): it is the fraction of hardest samples dropped first.")
    if int(bins) != bins or bins < 1:
        raise ValueError(f"ccs_bins={bins} must be a positive integer.")
    bins = int(bins)
    num_hard = int(round(beta * num_samples))
    if num_hard + num_keep > num_samples:
        raise ValueError(
            f"ccs_beta={beta} drops the {num_hard} hardest samples first, leaving {num_samples - num_hard}, "
            f"fewer than the {num_keep} to keep. The hard cut-off plus the coreset cannot exceed the data "
            f"set: use ccs_beta <= prune_ratio ({(num_samples - num_keep) / num_samples:.4g})."
        )
    hard = _ccs_hardness(scores, hardness)
    # Hardest first, ties by index, so the cut is deterministic.
    by_hardness = np.lexsort((np.arange(num_samples), -hard))
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


STRATEGIES: dict[str, StrategyFn] = {
    "topk": _topk,
    "random": _random,
    "class_balanced": _class_balanced,
    "ccs": _ccs,
    "dual": ratio_aware._dual,
    "auto": ratio_aware._auto,
}
"""Strategy name -> ``fn(scores, num_keep, seed, **options) -> kept indices``."""


def importance_weights(values: np.ndarray) -> np.ndarray:
    """TDDS Eq. 13: scores min-max normalised over all N samples to [0, 1] (all ones if constant)."""
    values = np.asarray(values, dtype=np.float64)
    low, high = values.min(), values.max()
    if high == low:
        return np.ones_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def select(
    scores: Scores,
    prune_ratio: float,
    strategy: str = "topk",
    seed: int = 0,
    weights: str | None = None,
    ccs_beta: float = 0.0,
    ccs_bins: int = 50,
    ccs_hardness: str = "auto",
    dual_cd: float = 4.0,
) -> Selection:
    """Keep ``N - round(prune_ratio * N)`` samples of ``scores`` chosen by ``strategy``.

    Args:
        scores: per-sample scores, higher = more important.
        prune_ratio: fraction of the training set to REMOVE, strictly between 0 and 1.
        strategy: one of :data:`STRATEGIES` (``"topk"``, ``"random"``, ``"class_balanced"``, ``"ccs"``,
            ``"dual"``, ``"auto"``).
        seed: seed of every random choice (``random``, and sampling inside CCS bins).
        weights: ``None`` for an unweighted selection, or ``"importance"`` for TDDS Eq. 13 weights
            (min-max normalised scores over all N; see the module docs).
        ccs_beta: CCS only: fraction of the WHOLE data set, the hardest, removed before binning. The
            paper tunes it per ratio (0.3 at 90% pruning on CIFAR-10); 0 turns the cut-off off. Must
            not exceed ``prune_ratio``.
        ccs_bins: CCS only: number of equal-width score bins (paper: 50).
        dual_cd: ``dual`` and ``auto`` only: DUAL's ``c_d``, how fast the sampling moves towards easy
            samples as the ratio grows (paper: 4).
        ccs_hardness: CCS only: what "hardest" means. ``"accumulated_margin"``: lowest
            ``scores.extras["accumulated_margin"]`` (AUM's, the official choice); ``"low_score"``:
            lowest score; ``"high_score"``: highest score (for difficulty scores such as forgetting
            counts or EL2N, where mislabelled samples score highest); ``"auto"``: the accumulated
            margin when the scores carry one, otherwise ``"high_score"`` (every difficulty score of the
            library -- EL2N, GraNd, forgetting, TDDS, AUM, entropy -- is oriented harder = higher).

    Returns:
        A :class:`Selection` with sorted indices, the scores' method name, and ``hparams`` recording
        the strategy, ratio, seed, weights and strategy options plus the scores' own hyper-parameters.
    """
    if not isinstance(scores, Scores):
        raise TypeError(
            f"select() takes a lightning_prune.Scores, got {type(scores).__name__}; wrap your "
            "array as Scores(values=..., method=..., labels=...)."
        )
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown selection strategy {strategy!r}; choose one of {sorted(STRATEGIES)}.")
    if weights is not None and weights not in WEIGHT_SCHEMES:
        raise ValueError(f"weights={weights!r} is not supported; use None or one of {list(WEIGHT_SCHEMES)}.")
    seed = check_seed(seed)
    num_keep = num_to_keep(len(scores), prune_ratio)
    hparams: dict[str, Any] = {
        "strategy": strategy,
        "prune_ratio": float(prune_ratio),
        "seed": seed,
        "weights": weights,
    }
    options: dict[str, Any] = {}
    if strategy == "ccs":
        options = {"beta": float(ccs_beta), "bins": ccs_bins, "hardness": ccs_hardness}
        hparams.update(
            ccs_beta=float(ccs_beta), ccs_bins=int(ccs_bins), ccs_hardness=_resolve_ccs_hardness(scores, ccs_hardness)
        )
    elif strategy == "dual":
        options = {"cd": float(dual_cd)}
        reached = ratio_aware.kept_ratio_removed(len(scores), num_keep)
        hparams.update(ratio_aware.dual_plan(scores, reached, float(dual_cd)))
    elif strategy == "auto":
        options = {"cd": float(dual_cd), "ratio": float(prune_ratio)}
        hparams.update(ratio_aware.auto_plan(scores, float(prune_ratio), num_keep, float(dual_cd)))
    kept = np.sort(np.asarray(STRATEGIES[strategy](scores, num_keep, seed, **options), dtype=np.int64))
    if kept.size != num_keep or np.unique(kept).size != num_keep:
        raise RuntimeError(
            f"strategy {strategy!r} returned {kept.size} indices ({np.unique(kept).size} unique) "
            f"instead of {num_keep} distinct ones."
        )
    hparams["scores_hparams"] = dict(scores.hparams)
    sample_weights = importance_weights(scores.values)[kept] if weights == "importance" else None
    return Selection(
        indices=kept,
        num_samples=len(scores),
        weights=sample_weights,
        method=scores.method,
        hparams=hparams,
        label_fingerprint=scores.label_fingerprint,
    )


def random_selection(
    num_samples: int, prune_ratio: float, seed: int = 0, labels: np.ndarray | None = None
) -> Selection:
    """A uniform random selection from the data-set size alone (the random-pruning baseline).

    ``labels`` (optional, in index order) only fingerprint the data set, so the selection is refused
    on another data set of the same size. Same ``seed`` -> same selection as ``select(..., "random")``.
    """
    num_samples = int(num_samples)
    seed = check_seed(seed)
    num_keep = num_to_keep(num_samples, prune_ratio)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (num_samples,):
            raise ValueError(f"labels have shape {labels.shape}; expected ({num_samples},), one per sample.")
    return Selection(
        indices=np.sort(_random_indices(num_samples, num_keep, seed)),
        num_samples=num_samples,
        method="random",
        hparams={"strategy": "random", "prune_ratio": float(prune_ratio), "seed": seed, "weights": None},
        label_fingerprint=label_fingerprint(labels),
    )
