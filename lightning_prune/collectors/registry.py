"""Collectors by name, for configuration files and the command line."""

from __future__ import annotations

from typing import Any

from lightning_prune.collectors.aum import AUM
from lightning_prune.collectors.base import ScoreCollector
from lightning_prune.collectors.dual import DUAL
from lightning_prune.collectors.dynamic_uncertainty import DynamicUncertainty
from lightning_prune.collectors.el2n import EL2N
from lightning_prune.collectors.entropy import Entropy
from lightning_prune.collectors.forgetting import Forgetting
from lightning_prune.collectors.grand import GraNd
from lightning_prune.collectors.herding import Herding
from lightning_prune.collectors.moderate import Moderate
from lightning_prune.collectors.prototypicality import Prototypicality
from lightning_prune.collectors.tdds import TDDS

COLLECTORS: dict[str, type[ScoreCollector]] = {
    "tdds": TDDS,
    "forgetting": Forgetting,
    "el2n": EL2N,
    "grand": GraNd,
    "aum": AUM,
    "dynamic_uncertainty": DynamicUncertainty,
    "dual": DUAL,
    "entropy": Entropy,
    "herding": Herding,
    "moderate": Moderate,
    "prototypicality": Prototypicality,
}
"""Every collector of the library under the name its scores carry (``Scores.method``)."""


def make_collector(method: str, /, **kwargs: Any) -> ScoreCollector:
    """Create the collector registered as ``method`` with ``kwargs``, e.g. ``make_collector("el2n", epochs=10)``.

    ``method`` is positional-only, so ``name=`` (the collector's own argument) passes through.
    """
    if not isinstance(method, str) or method not in COLLECTORS:
        raise ValueError(f"Unknown collector {method!r}; known collectors: {', '.join(sorted(COLLECTORS))}.")
    try:
        return COLLECTORS[method](**kwargs)
    except TypeError as error:
        raise TypeError(
            f"make_collector({method!r}, ...): {error}. See help({COLLECTORS[method].__name__})."
        ) from error
