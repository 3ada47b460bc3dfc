"""Selection strategies: turn per-sample :class:`Scores` into a :class:`Selection` at a pruning ratio.

``prune_ratio`` is always the fraction of the training set REMOVED: at ratio r, ``round(r * N)``
samples are dropped and ``N - round(r * N)`` kept (Python's ``round``, as everywhere in the library).

Strategies (all deterministic for a given ``seed``):

``topk``
    The ``N - round(rN)`` highest scores, globally. Equal scores are broken in a random order drawn
    from ``seed`` (as in every strategy that sorts), so that tied scores on a class-sorted data set
    do not keep the first classes whole; the result is the same for a seed on every platform.
``random``
    A uniform random subset drawn from ``seed``; ignores the score values. Without any scores, use
    :func:`random_selection`.
``class_balanced``
    Top scores within each class; every class keeps its share of the data set (largest-remainder
    rounding so the total is exact; equal remainders and equal scores in ``seed``'s random order). Needs labels; a class whose share rounds to zero is an error.
``ccs``
    Coverage-centric coreset selection (Zheng et al., ICLR 2023): drop the hardest ``ccs_beta``
    fraction of the whole data set (``ccs_hardness``: the lowest accumulated margin, or the hard end
    the scores' meaning names; ties at random), split the remaining score range into ``ccs_bins`` equal-width
    bins, give bins budgets smallest bin first (``min(bin size, remaining budget // bins left)``)
    and sample uniformly inside each bin.

``easy``
    The easiest samples of each class (every class its share), read from the scores' meaning: the
    lowest difficulty, the highest easiness, or DUAL's mean label probability. Where a class would
    keep none (or without labels) the easiest of the whole data set, with a warning, recorded as
    ``within="all"``. Preference scores have no easy end: refused. It is a validated candidate.
``dual``, ``auto``
    Ratio-aware: DUAL's Beta sampling, and the library's recommended strategy (not ``select()``'s
    default, which is ``topk``): for a coreset trained as many epochs as the full run (``budget="epochs"``,
    the default), from a ratio of 0.8 the easiest samples of each class; otherwise DUAL's sampling for
    DUAL scores, and for other difficulty scores that carry label-noise evidence, up to a ratio of 0.5,
    the top of each class once the likely mislabelled samples are cut off, else CCS with a hard cut-off
    of at least their share and of the ratio's ``beta``; the top of each class for preference scores.
    See :mod:`lightning_prune.selection.ratio_aware`.

The strategies that read a direction (``auto``, ``dual``, CCS's hardness) read it from the scores'
declared meaning (``Scores.meaning``: difficulty, easiness or preference; see
:mod:`lightning_prune.selection.meaning`) and refuse a combination that has none.

``weights="importance"`` attaches TDDS's importance weights (paper Eq. 13): the scores min-max
normalised over all N samples to [0, 1]; each kept sample's weight is its normalised score. (When
all N scores are equal every weight is 1.) :class:`~lightning_prune.PrunedDataModule` with
``weighted=True`` hands them to the model.

The strategies live in :data:`STRATEGIES`, each a :class:`Strategy`: the function that selects, the
options it takes (their ``select()`` keyword names, defaults and checks) and the plan it records.
``select()`` dispatches through it alone, so a new strategy is one entry::

    # below the top: skip the `skip_top` highest scores, keep the next ones
    STRATEGIES["below_top"] = Strategy(
        run=lambda scores, num_keep, seed, plan: np.argsort(-scores.values)[plan["skip_top"] :][:num_keep],
        options=(Option("skip_top", 0, check=int),),
    )
    select(scores, 0.5, strategy="below_top", skip_top=10)  # hparams record skip_top=10

A plain function ``fn(scores, num_keep, seed, **options) -> np.ndarray`` (kept indices) is accepted
too; its keyword parameters with defaults are its options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_prune.selection import ratio_aware
from lightning_prune.selection.files import label_fingerprint
from lightning_prune.selection.primitives import (
    CCS_HARDNESS,
    ccs,
    ccs_bin_budgets,
    check_ccs_beta,
    check_ccs_bins,
    check_ccs_hardness,
    check_positive_number,
    check_prune_ratio,
    check_seed,
    class_balanced,
    class_quotas,
    classes_left_empty,
    kept_ratio_removed,
    num_to_keep,
    random_indices,
    resolve_ccs_hardness,
    top,
)
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection

__all__ = [
    "CCS_HARDNESS",
    "STRATEGIES",
    "WEIGHT_SCHEMES",
    "Option",
    "Strategy",
    "ccs_bin_budgets",
    "check_prune_ratio",
    "check_seed",
    "check_select_args",
    "class_quotas",
    "importance_weights",
    "num_to_keep",
    "random_selection",
    "select",
]

StrategyFn = Callable[..., np.ndarray]
"""A plain strategy function ``fn(scores, num_keep, seed, **options) -> kept indices``."""
PlanFn = Callable[[Scores, float, int, int, Mapping[str, Any]], dict[str, Any]]
"""``plan(scores, prune_ratio, num_keep, seed, options) -> plan``: what the strategy will do, recorded."""
RunFn = Callable[[Scores, int, int, Mapping[str, Any]], np.ndarray]
"""``run(scores, num_keep, seed, plan) -> kept indices``: the selection the plan describes."""

WEIGHT_SCHEMES = ("importance",)


def _unchecked(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Option:
    """An option of a strategy.

    Attributes:
        name: its keyword in ``select()`` and in a pipeline method's ``select_args`` (e.g. ``"ccs_beta"``).
        default: the value used when it is not given.
        check: returns the value normalised, or raises an error that names the option and the fix.
    """

    name: str
    default: Any
    check: Callable[[Any], Any] = _unchecked


RESERVED = frozenset(
    {"scores", "prune_ratio", "strategy", "seed", "weights", "options", "score_meaning", "scores_hparams", "validated"}
)
"""Names no strategy option or plan key may take: ``select()``'s arguments and the keys it records itself."""


def _options_as_plan(
    scores: Scores, prune_ratio: float, num_keep: int, seed: int, options: Mapping[str, Any]
) -> dict[str, Any]:
    return dict(options)


@dataclass(frozen=True)
class Strategy:
    """A selection strategy as ``select()`` runs it: ``plan`` once, record it, ``run`` it.

    Attributes:
        run: ``run(scores, num_keep, seed, plan) -> kept indices`` (distinct, any order).
        options: the options it takes; any other is refused.
        plan: ``plan(scores, prune_ratio, num_keep, seed, options) -> dict`` of JSON-able values, recorded in
            the selection's ``hparams`` and handed to ``run``; by default the checked options themselves.
        description: one line for error messages and listings.
    """

    run: RunFn
    options: tuple[Option, ...] = ()
    plan: PlanFn = _options_as_plan
    description: str = ""

    def __post_init__(self) -> None:
        names = [option.name for option in self.options]
        reserved = sorted(set(names) & RESERVED)
        if reserved:
            raise ValueError(
                f"Strategy options {reserved} are select()'s own arguments or recorded keys; name them otherwise."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"Strategy options {names} name an option twice.")

    def make_plan(
        self, scores: Scores, prune_ratio: float, num_keep: int, seed: int, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """:attr:`plan`, checked: a mapping whose keys leave the keys ``select()`` records alone."""
        plan = self.plan(scores, prune_ratio, num_keep, seed, options)
        if not isinstance(plan, Mapping):
            raise TypeError(f"A strategy's plan must return a dict of what it will do, got {type(plan).__name__}.")
        clash = sorted(set(plan) & RESERVED)
        if clash:
            raise ValueError(f"A strategy's plan may not set {clash}: select() records those itself.")
        return dict(plan)

    @classmethod
    def from_function(cls, fn: StrategyFn) -> Strategy:
        """A plain ``fn(scores, num_keep, seed, **options)``; its keyword parameters with defaults are its options."""
        parameters = list(inspect.signature(fn).parameters.values())[3:]
        options = tuple(
            Option(p.name, p.default)
            for p in parameters
            if p.default is not inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
        return cls(run=lambda scores, num_keep, seed, plan: fn(scores, num_keep, seed, **plan), options=options)

    @property
    def option_names(self) -> list[str]:
        return [option.name for option in self.options]

    def check_options(self, name: str, given: Mapping[str, Any], what: str = "option") -> dict[str, Any]:
        """``given`` checked against :attr:`options`, the defaults filled in."""
        known = {option.name: option for option in self.options}
        for key in given:
            if key not in known:
                raise ValueError(_unknown_option(name, self, key, what))
        return {key: option.check(given[key]) if key in given else option.default for key, option in known.items()}


def _owners_hint(name: str, key: str) -> str:
    """Which strategies take ``key``, for a message refusing it on strategy ``name``."""
    owners = sorted(other for other, entry in STRATEGIES.items() if key in as_strategy(entry).option_names)
    hint = f" {key} is an option of strategy {', '.join(map(repr, owners))}." if owners else ""
    if name == "auto" and key == "ccs_beta":
        hint += (
            " 'auto' chooses its CCS cut-off from the ratio (0.75 * max(0, r - 0.5)); to set it, use strategy='ccs'."
        )
    return hint


def _unknown_option(name: str, strategy: Strategy, key: str, what: str) -> str:
    takes = f"it takes: {', '.join(strategy.option_names)}" if strategy.options else "it takes no option"
    return f"{what} {key!r}: strategy {name!r} does not take {key}; {takes}.{_owners_hint(name, key)}"


def as_strategy(entry: Strategy | StrategyFn) -> Strategy:
    """A registry entry as a :class:`Strategy` (plain functions wrapped)."""
    return entry if isinstance(entry, Strategy) else Strategy.from_function(entry)


def _strategy(name: Any) -> Strategy:
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ValueError(f"Unknown selection strategy {name!r}; choose one of {sorted(STRATEGIES)}.")
    return as_strategy(STRATEGIES[name])


def _topk(scores: Scores, num_keep: int, seed: int, plan: Mapping[str, Any]) -> np.ndarray:
    return top(scores.values, num_keep, seed)


def _random(scores: Scores, num_keep: int, seed: int, plan: Mapping[str, Any]) -> np.ndarray:
    return random_indices(len(scores), num_keep, seed)


def _class_balanced(scores: Scores, num_keep: int, seed: int, plan: Mapping[str, Any]) -> np.ndarray:
    if scores.labels is None:
        raise ValueError(
            f"strategy='class_balanced' needs the training labels, but these {scores.method} scores carry "
            "none. Create the Scores with labels=... (collectors record them), or use strategy='topk'."
        )
    empty = classes_left_empty(scores.labels, num_keep, seed)
    if empty:
        raise ValueError(f"strategy='class_balanced': {empty}. Lower prune_ratio, or use strategy='topk'.")
    return class_balanced(scores.values, scores.labels, num_keep, seed)


def _ccs_plan(
    scores: Scores, prune_ratio: float, num_keep: int, seed: int, options: Mapping[str, Any]
) -> dict[str, Any]:
    beta = options["ccs_beta"]
    return {
        "ccs_beta": beta,
        "ccs_bins": options["ccs_bins"],
        "ccs_hardness": resolve_ccs_hardness(scores, options["ccs_hardness"], beta),
    }


def _ccs(scores: Scores, num_keep: int, seed: int, plan: Mapping[str, Any]) -> np.ndarray:
    return ccs(scores, num_keep, seed, beta=plan["ccs_beta"], bins=plan["ccs_bins"], hardness=plan["ccs_hardness"])


def _dual_plan(
    scores: Scores, prune_ratio: float, num_keep: int, seed: int, options: Mapping[str, Any]
) -> dict[str, Any]:
    return ratio_aware.dual_plan(scores, kept_ratio_removed(len(scores), num_keep), options["dual_cd"], seed)


def _auto_plan(
    scores: Scores, prune_ratio: float, num_keep: int, seed: int, options: Mapping[str, Any]
) -> dict[str, Any]:
    return ratio_aware.auto_plan(
        scores,
        prune_ratio,
        num_keep,
        options["dual_cd"],
        seed=seed,
        ccs_bins=options["ccs_bins"],
        ccs_hardness=options["ccs_hardness"],
        budget=options["budget"],
    )


def _easy_plan(
    scores: Scores, prune_ratio: float, num_keep: int, seed: int, options: Mapping[str, Any]
) -> dict[str, Any]:
    return ratio_aware.easy_plan(scores, num_keep, seed)


CCS_BETA = Option("ccs_beta", 0.0, check_ccs_beta)
CCS_BINS = Option("ccs_bins", 50, check_ccs_bins)
CCS_HARDNESS_OPTION = Option("ccs_hardness", "auto", check_ccs_hardness)
DUAL_CD = Option("dual_cd", 4.0, lambda value: check_positive_number(value, "dual_cd"))
AUTO_BUDGET = Option("budget", "epochs", ratio_aware.check_budget)

STRATEGIES: dict[str, Strategy | StrategyFn] = {
    "topk": Strategy(_topk, description="the highest scores"),
    "random": Strategy(_random, description="a uniform random subset"),
    "class_balanced": Strategy(_class_balanced, description="the highest scores of each class"),
    "ccs": Strategy(_ccs, (CCS_BETA, CCS_BINS, CCS_HARDNESS_OPTION), _ccs_plan, "coverage-centric coreset selection"),
    "dual": Strategy(ratio_aware.dual_run, (DUAL_CD,), _dual_plan, "DUAL's ratio-adaptive Beta sampling"),
    "easy": Strategy(ratio_aware.easy_run, (), _easy_plan, "the easiest samples of each class, as the meaning reads"),
    "auto": Strategy(
        ratio_aware.auto_run,
        (DUAL_CD, CCS_BINS, CCS_HARDNESS_OPTION, AUTO_BUDGET),
        _auto_plan,
        "the recommended ratio-aware rule",
    ),
}
"""Strategy name -> :class:`Strategy` (or a plain ``fn(scores, num_keep, seed, **options)``)."""


def check_select_args(strategy: str, select_args: Mapping[str, Any], *, allowed: Collection[str] = ()) -> None:
    """Check a pipeline method's ``select_args`` against ``strategy``'s options before any training.

    Raises ``ValueError`` for an unknown strategy, a key the strategy does not take (naming the keys it
    takes) or a value its option refuses. ``allowed`` names keys the caller handles itself (``validate``).
    Checks that need the scores (e.g. ``ccs_beta <= prune_ratio``) are left to :func:`select`.
    """
    entry = _strategy(strategy)
    if not isinstance(select_args, Mapping):
        raise TypeError(f"select_args must be a mapping of option names to values, got {type(select_args).__name__}.")
    given = {key: value for key, value in select_args.items() if key not in allowed}
    for key in given:
        if key not in entry.option_names:
            keys = [*entry.option_names, *allowed]
            takes = f"takes: {', '.join(keys)}" if keys else "takes no select_args"
            raise ValueError(
                f"select_args key {key!r} is not known here: strategy {strategy!r} {takes}."
                f"{_owners_hint(strategy, key)} Fix the key's spelling, or remove it."
            )
    entry.check_options(strategy, given)


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
    ccs_beta: float | None = None,
    ccs_bins: int | None = None,
    ccs_hardness: str | None = None,
    dual_cd: float | None = None,
    **options: Any,
) -> Selection:
    """Keep ``N - round(prune_ratio * N)`` samples of ``scores`` chosen by ``strategy``.

    Args:
        scores: per-sample scores, higher = keep; ``scores.meaning`` says what higher measures.
        prune_ratio: fraction of the training set to REMOVE, strictly between 0 and 1.
        strategy: a name in :data:`STRATEGIES` (``"topk"``, the default, ``"random"``, ``"class_balanced"``,
            ``"ccs"``, ``"dual"``, ``"auto"``, or one registered there).
        seed: seed of every random choice (``random``, sampling inside CCS bins and DUAL's draws, and the
            order among tied scores in every strategy that sorts, ``topk`` included).
        weights: ``None`` for an unweighted selection, or ``"importance"`` for TDDS Eq. 13 weights
            (min-max normalised scores over all N; see the module docs).
        ccs_beta: ``ccs`` only: fraction of the WHOLE data set, the hardest, removed before binning. The
            paper tunes it per ratio (0.3 at 90% pruning on CIFAR-10); 0 (default) turns the cut-off off.
            Must not exceed ``prune_ratio``. ``auto`` chooses its own and refuses this option.
        ccs_bins: ``ccs`` and ``auto``: number of equal-width score bins (paper and default: 50).
        ccs_hardness: ``ccs`` and ``auto``: what "hardest" means. ``"accumulated_margin"``: lowest
            ``scores.extras["accumulated_margin"]`` (AUM's, the official choice); ``"low_score"``:
            lowest score; ``"high_score"``: highest score; ``"auto"`` (default): the accumulated margin
            when the scores carry one, else the hard end their meaning names (high for difficulty, low
            for easiness; preference scores have none, so a cut-off on them needs an explicit end). An
            end that contradicts the meaning is refused.
        dual_cd: ``dual`` and ``auto``: DUAL's ``c_d``, how fast the sampling moves towards easy
            samples as the ratio grows (paper and default: 4).
        **options: the options of a strategy registered in :data:`STRATEGIES`, by name; ``auto`` takes
            ``budget``, how the coreset will be trained: ``"epochs"`` (default: as many epochs as the full
            run, so fewer optimiser steps, as a ``PrunedDataModule`` under the same ``max_epochs``) or
            ``"steps"`` (the full run's optimiser steps, e.g. with :class:`~lightning_prune.pipeline.budget.StepBudget`;
            the pipeline passes its own ``budget``). From a ratio of 0.8 a coreset trained for epochs gets
            the easiest samples of each class; one trained for steps does not.

    Options the chosen strategy does not take are refused (naming the ones it takes).

    Returns:
        A :class:`Selection` with sorted indices, the scores' method name, and ``hparams`` recording
        the strategy, ratio, seed, weights, the scores' meaning and the strategy's plan (the options
        and what it chose, from the computation the selection was drawn with) plus the scores' own
        hyper-parameters.
    """
    if not isinstance(scores, Scores):
        raise TypeError(
            f"select() takes a lightning_prune.Scores, got {type(scores).__name__}; wrap your "
            "array as Scores(values=..., method=..., labels=...)."
        )
    entry = _strategy(strategy)
    if weights is not None and weights not in WEIGHT_SCHEMES:
        raise ValueError(f"weights={weights!r} is not supported; use None or one of {list(WEIGHT_SCHEMES)}.")
    seed = check_seed(seed)
    ratio = check_prune_ratio(prune_ratio)
    num_keep = num_to_keep(len(scores), prune_ratio)
    named = {"ccs_beta": ccs_beta, "ccs_bins": ccs_bins, "ccs_hardness": ccs_hardness, "dual_cd": dual_cd}
    given = {**{key: value for key, value in named.items() if value is not None}, **options}
    plan = entry.make_plan(scores, ratio, num_keep, seed, entry.check_options(strategy, given))
    kept = np.sort(np.asarray(entry.run(scores, num_keep, seed, plan), dtype=np.int64))
    if kept.size != num_keep or np.unique(kept).size != num_keep:
        raise RuntimeError(
            f"strategy {strategy!r} returned {kept.size} indices ({np.unique(kept).size} unique) "
            f"instead of {num_keep} distinct ones."
        )
    hparams: dict[str, Any] = {
        "strategy": strategy,
        "prune_ratio": ratio,
        "seed": seed,
        "weights": weights,
        "score_meaning": scores.meaning.value,
        **plan,
        "scores_hparams": dict(scores.hparams),
    }
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
        indices=np.sort(random_indices(num_samples, num_keep, seed)),
        num_samples=num_samples,
        method="random",
        hparams={"strategy": "random", "prune_ratio": float(prune_ratio), "seed": seed, "weights": None},
        label_fingerprint=label_fingerprint(labels),
    )
