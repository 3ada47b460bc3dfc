"""lightning-prune: dataset pruning (coreset selection) for PyTorch Lightning."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lightning-prune")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from lightning_prune.collectors import (
    TDDS,
    BatchView,
    Forgetting,
    ScoreCollector,
    default_adapter,
    recompute_logits,
)
from lightning_prune.data import IndexedDataset, dataset_targets, unpack_batch
from lightning_prune.selection.files import ScoreFileError
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection

__all__ = [
    "TDDS",
    "BatchView",
    "Forgetting",
    "IndexedDataset",
    "ScoreCollector",
    "ScoreFileError",
    "Scores",
    "Selection",
    "__version__",
    "dataset_targets",
    "default_adapter",
    "recompute_logits",
    "unpack_batch",
]
