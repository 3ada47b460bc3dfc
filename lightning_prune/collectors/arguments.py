"""Checking and normalising collector constructor arguments.

Constructor arguments are a collector's identity (:meth:`~lightning_prune.ScoreCollector.hparams`),
so each is stored as a plain Python value: a NumPy integer such as ``np.int64(5)`` (what array
arithmetic and config loaders hand over) is accepted wherever an ``int`` is, and stored as ``int``.
"""

from __future__ import annotations

import numbers
from typing import Any, TypeGuard

import numpy as np


def is_integer(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is an integer (Python or NumPy), booleans excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def plain(value: Any, owner: str, argument: str) -> Any:
    """``value`` as plain JSON data (``None``, bool, int, float, str, lists and string-keyed dicts of them);
    NumPy scalars become numbers, tuples lists. Anything else is refused, naming the argument."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(item, owner, argument) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: plain(item, owner, argument) for key, item in value.items()}
    raise TypeError(
        f"{owner}: the identifying argument {argument!r} holds {type(value).__name__}, which a score file's or "
        "checkpoint's identity cannot record (it takes None, bool, int, float, str and lists of them). Store a "
        f"plain form as self.{argument}, or list {argument!r} in the class's `non_identifying` if it does not "
        "change the scores."
    )
