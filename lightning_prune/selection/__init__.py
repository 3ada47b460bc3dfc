"""Scores, selections, the strategies that turn one into the other, and their file format."""

from lightning_prune.selection.files import ScoreFileError, label_fingerprint
from lightning_prune.selection.meaning import MeaningBy, ScoreMeaning, meaning_of
from lightning_prune.selection.ratio_aware import easiness
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection
from lightning_prune.selection.strategies import (
    STRATEGIES,
    Option,
    Strategy,
    check_select_args,
    importance_weights,
    num_to_keep,
    random_selection,
    select,
)

__all__ = [
    "STRATEGIES",
    "MeaningBy",
    "Option",
    "ScoreFileError",
    "ScoreMeaning",
    "Scores",
    "Selection",
    "Strategy",
    "check_select_args",
    "easiness",
    "importance_weights",
    "label_fingerprint",
    "meaning_of",
    "num_to_keep",
    "random_selection",
    "select",
]
