"""What a score's values mean: the direction every strategy that reads one must follow.

Every score is oriented so that higher = keep (``topk`` keeps the highest values whatever they
mean). What "higher" measures differs, and the ratio-aware strategies depend on it:

``difficulty``
    Higher = harder: EL2N, GraNd, Forgetting, TDDS, AUM, Entropy, DynamicUncertainty, DUAL,
    ``Prototypicality(keep="hard")``. The easy end is the low scores, the hard end (CCS's cut-off) the
    high ones. AUM's values are minus the mean margin (a low margin marks a hard or mislabelled
    sample), so they are a difficulty; its ``extras["accumulated_margin"]`` is the sum of the margins,
    not negated, so higher = easier there, and CCS reads the hard end of it as its lowest values
    whatever the values mean. DUAL's ``extras["confidence"]`` (mean label probability) is an easiness.
``easiness``
    Higher = easier: ``Prototypicality(keep="easy")`` (minus the distance to the prototype, the
    difficulty negated). The easy end is the high scores, the hard end the low ones.
``preference``
    Higher = more representative or keep-worthy in a sense that is no difficulty: Herding (earlier
    pick), Moderate (closer to the median distance; both ends of the difficulty are dropped). Such a
    score has no easy and no hard end, so strategies that need one refuse it or keep its top.

Collectors declare it at class level, as ``score_meaning`` (like torchmetrics' ``higher_is_better``);
where it follows a constructor argument the declaration is a :class:`MeaningBy`, resolved from the
collector's hyper-parameters, so that a score file's manifest resolves it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from typing_extensions import override


class ScoreMeaning(str, Enum):
    """What higher values of a score mean (see the module docs)."""

    DIFFICULTY = "difficulty"
    EASINESS = "easiness"
    PREFERENCE = "preference"

    @override
    def __str__(self) -> str:
        return self.value


def check_meaning(meaning: Any) -> ScoreMeaning:
    """``meaning`` as a :class:`ScoreMeaning`, or a ``ValueError`` naming the valid ones."""
    try:
        return ScoreMeaning(meaning)
    except ValueError:
        raise ValueError(
            f"meaning={meaning!r} is not one of {[m.value for m in ScoreMeaning]}: 'difficulty' (higher = harder), "
            "'easiness' (higher = easier) or 'preference' (higher = keep in another sense, e.g. more representative)."
        ) from None


@dataclass(frozen=True)
class MeaningBy:
    """A meaning that follows one hyper-parameter, e.g. ``MeaningBy("keep", {"hard": ..., "easy": ...}, "hard")``.

    ``default`` is the hyper-parameter's value where ``hparams`` do not give it (the constructor's default).
    """

    hparam: str
    meanings: Mapping[Any, ScoreMeaning]
    default: Any = None

    def resolve(self, hparams: Mapping[str, Any], method: str = "these") -> ScoreMeaning:
        value = hparams.get(self.hparam, self.default)
        if value not in self.meanings:
            raise ValueError(
                f"the meaning of {method} scores follows the hyper-parameter {self.hparam!r} (one of "
                f"{sorted(map(str, self.meanings))}), which their hyper-parameters {dict(hparams)} do not give "
                "as one of those."
            )
        return self.meanings[value]


MeaningDeclaration = ScoreMeaning | MeaningBy
"""What a collector class declares as ``score_meaning``."""


def resolve_meaning(declaration: MeaningDeclaration, hparams: Mapping[str, Any], method: str = "these") -> ScoreMeaning:
    """The meaning a declaration gives for ``hparams``."""
    if isinstance(declaration, MeaningBy):
        return declaration.resolve(hparams, method)
    return check_meaning(declaration)


def meaning_of(collector: type, hparams: Mapping[str, Any]) -> ScoreMeaning:
    """The meaning of the scores of ``collector`` (a collector class) made with ``hparams``."""
    declaration = getattr(collector, "score_meaning", ScoreMeaning.DIFFICULTY)
    return resolve_meaning(declaration, hparams, getattr(collector, "method", collector.__name__))


def registered_meaning(method: str, hparams: Mapping[str, Any]) -> ScoreMeaning | None:
    """The meaning the library's collector registered as ``method`` declares; ``None`` for other methods.

    For score files written before meanings were recorded.
    """
    # collectors build Scores (they import this package), so the registry is read when a file is loaded
    from lightning_prune.collectors.registry import COLLECTORS

    collector = COLLECTORS.get(method)
    return None if collector is None else meaning_of(collector, hparams)
