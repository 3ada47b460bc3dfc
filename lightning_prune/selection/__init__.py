"""Scores, selections, the strategies that turn one into the other, and their file format."""

from lightning_prune.selection.files import ScoreFileError, label_fingerprint
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection
from lightning_prune.selection.strategies import (
    STRATEGIES,
    importance_weights,
    num_to_keep,
    random_selection,
    select,
)

__all__ = [
    "STRATEGIES",
    "ScoreFileError",
    "Scores",
    "Selection",
    "importance_weights",
    "label_fingerprint",
    "num_to_keep",
    "random_selection",
    "select",
]
