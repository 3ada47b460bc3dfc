"""Training-dynamics collectors: ``lightning.pytorch.Callback``s that score every training sample."""

from lightning_prune.collectors.aum import AUM
from lightning_prune.collectors.base import (
    BatchView,
    EpochNeed,
    ScoreCollector,
    check_unique_state_keys,
    default_adapter,
    recompute_logits,
)
from lightning_prune.collectors.dual import DUAL
from lightning_prune.collectors.dynamic_uncertainty import DynamicUncertainty
from lightning_prune.collectors.el2n import EL2N
from lightning_prune.collectors.entropy import Entropy
from lightning_prune.collectors.features import FeatureCollector
from lightning_prune.collectors.forgetting import Forgetting
from lightning_prune.collectors.grand import GraNd
from lightning_prune.collectors.herding import Herding
from lightning_prune.collectors.kmeans import KMeansResult, kmeans
from lightning_prune.collectors.moderate import Moderate
from lightning_prune.collectors.prototypicality import Prototypicality
from lightning_prune.collectors.registry import COLLECTORS, make_collector
from lightning_prune.collectors.state import PerSample
from lightning_prune.collectors.tdds import TDDS

__all__ = [
    "AUM",
    "COLLECTORS",
    "DUAL",
    "EL2N",
    "TDDS",
    "BatchView",
    "DynamicUncertainty",
    "EpochNeed",
    "Entropy",
    "FeatureCollector",
    "Forgetting",
    "GraNd",
    "Herding",
    "KMeansResult",
    "Moderate",
    "PerSample",
    "Prototypicality",
    "ScoreCollector",
    "check_unique_state_keys",
    "default_adapter",
    "kmeans",
    "make_collector",
    "recompute_logits",
]
