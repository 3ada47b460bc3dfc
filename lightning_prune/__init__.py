"""lightning-prune: dataset pruning (coreset selection) for PyTorch Lightning."""

from typing import Any

from lightning_prune._version import __version__
from lightning_prune.adapruner import AdaPruner
from lightning_prune.collectors import (
    AUM,
    COLLECTORS,
    DUAL,
    EL2N,
    TDDS,
    BatchView,
    DynamicUncertainty,
    Entropy,
    EpochNeed,
    Forgetting,
    GraNd,
    Herding,
    Moderate,
    PerSample,
    Prototypicality,
    ScoreCollector,
    default_adapter,
    make_collector,
    recompute_logits,
)
from lightning_prune.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    IndexedDataset,
    PrunedDataModule,
    SelectionSampler,
    TabularDataModule,
    WeightedDataset,
    dataset_targets,
    unpack_batch,
)
from lightning_prune.data.indexed import batch_weights
from lightning_prune.dynamic import RS2, DynamicDataModule, DynamicSampler, InfoBatch, SeTa
from lightning_prune.dynamic.losses import weighted_outputs
from lightning_prune.influence import (
    InfluencePruner,
    InfluenceVectors,
    PruningSolution,
    greedy_cardinality,
    greedy_epsilon,
    influence_vectors,
    solve_cardinality,
    solve_epsilon,
)
from lightning_prune.integrations.export import EXPORT_FORMATS, export_selection, load_exported
from lightning_prune.integrations.hf import HFIndexedDataset, pruned_hf_dataset
from lightning_prune.models import MLP, Classifier, SmallCNN, cifar_resnet18
from lightning_prune.models.schedules import cosine_schedule, progress_cosine, progress_schedule
from lightning_prune.selection.files import ScoreFileError
from lightning_prune.selection.meaning import ScoreMeaning
from lightning_prune.selection.mislabelled import Mislabelled, mislabelled
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection
from lightning_prune.selection.strategies import STRATEGIES, importance_weights, random_selection, select

__all__ = [
    "AdaPruner",
    "AUM",
    "RS2",
    "COLLECTORS",
    "DUAL",
    "EL2N",
    "DynamicDataModule",
    "DynamicSampler",
    "DynamicUncertainty",
    "InfoBatch",
    "SeTa",
    "Entropy",
    "GraNd",
    "Herding",
    "Moderate",
    "Mislabelled",
    "mislabelled",
    "Prototypicality",
    "make_collector",
    "STRATEGIES",
    "TDDS",
    "BatchView",
    "CIFAR100DataModule",
    "CIFAR10DataModule",
    "Classifier",
    "MLP",
    "DigitsDataModule",
    "Forgetting",
    "IndexedDataset",
    "HFIndexedDataset",
    "pruned_hf_dataset",
    "EXPORT_FORMATS",
    "export_selection",
    "load_exported",
    "InfluencePruner",
    "InfluenceVectors",
    "PruningSolution",
    "greedy_cardinality",
    "greedy_epsilon",
    "influence_vectors",
    "solve_cardinality",
    "solve_epsilon",
    "PrunedDataModule",
    "PerSample",
    "ScoreCollector",
    "ScoreFileError",
    "Scores",
    "Selection",
    "SelectionSampler",
    "TabularDataModule",
    "SmallCNN",
    "WeightedDataset",
    "__version__",
    "cifar_resnet18",
    "dataset_targets",
    "default_adapter",
    "importance_weights",
    "progress_cosine",
    "progress_schedule",
    "cosine_schedule",
    "batch_weights",
    "weighted_outputs",
    "EpochNeed",
    "ScoreMeaning",
    "random_selection",
    "recompute_logits",
    "select",
    "unpack_batch",
]

# The LitData integration subclasses litdata.StreamingDataset, so its module imports litdata (extra [litdata]);
# these names load it on first use, keeping `import lightning_prune` free of the optional packages.
_LAZY = {
    "IndexedStreamingDataset": "lightning_prune.integrations.litdata",
    "pruned_streaming_dataset": "lightning_prune.integrations.litdata",
    "write_pruned_streaming": "lightning_prune.integrations.litdata",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_prune' has no attribute {name!r}")
