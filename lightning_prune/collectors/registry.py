"""Collectors by name, for configuration files and the command line."""

from __future__ import annotations

from typing import Any

from lightning_prune.collectors.aum import AUM
from lightning_prune.collectors.base import ScoreCollector
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
    "entropy": Entropy,
    "herding": Herding,
    "moderate": Moderate,
    "prototypicality": Prototypicality,
}
"""Every collector of the library under the name its scores carry (``Scores.method``)."""


def make_collector(name: str, **kwargs: Any) -> ScoreCollector:
    """Create the collector registered as ``name`` with ``kwargs``, e.g. ``make_collector("el2n", epochs=10)``."""
    if not isinstance(name, str) or name not in COLLECTORS:
        raise ValueError(f"Unknown collector {name!r}; known collectors: {', '.join(sorted(COLLECTORS))}.")
    try:
        return COLLECTORS[name](**kwargs)
    except TypeError as error:
        raise TypeError(f"make_collector({name!r}, ...): {error}. See help({COLLECTORS[name].__name__}).") from error
