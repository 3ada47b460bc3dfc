"""Input checks, exact norms and the small helpers every solver phase shares.

They sit apart so that the exact, relaxation, greedy and local-search phases validate their inputs
and measure a pruned set the same way: in float64, chunk by chunk, so that ``S`` (often float32
and gigabytes large) is never copied whole.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

_METHODS = ("auto", "exact", "relaxation", "greedy")
_ROW_CHUNK = 4096


@dataclass(frozen=True)
class _Target:
    """What one solve is asked for: ``m`` pruned samples (cardinality problem) or the budget
    ``epsilon`` on ``||S^T W||_2`` (epsilon problem). Exactly one of the two is set."""

    m: int | None = None
    epsilon: float | None = None

    def __post_init__(self) -> None:
        if (self.m is None) == (self.epsilon is None):
            raise ValueError("a target is either m (cardinality problem) or epsilon (epsilon problem).")

    @property
    def problem(self) -> str:
        return "cardinality" if self.m is not None else "epsilon"

    @property
    def count(self) -> int:
        """``m``, for code that only runs on the cardinality problem."""
        if self.m is None:
            raise ValueError("the epsilon problem has no cardinality m.")
        return self.m

    @property
    def budget(self) -> float:
        """``epsilon``, for code that only runs on the epsilon problem."""
        if self.epsilon is None:
            raise ValueError("the cardinality problem has no budget epsilon.")
        return self.epsilon

    @property
    def limit_sq(self) -> float | None:
        """The budget on ``||z||^2``; ``None`` for the cardinality problem."""
        return None if self.epsilon is None else self.epsilon**2


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method={method!r}: choose one of {_METHODS}.")


def _check_S(S: Any) -> np.ndarray:
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] == 0 or S.shape[1] == 0:
        raise ValueError(f"S must be a non-empty 2-D array [n_samples, n_params], got shape {S.shape}.")
    if not np.issubdtype(S.dtype, np.floating):
        S = S.astype(np.float64)
    for start in range(0, S.shape[0], _ROW_CHUNK):
        block = S[start : start + _ROW_CHUNK]
        if not np.isfinite(block).all():
            rows = start + np.flatnonzero(~np.isfinite(block).all(axis=1))
            raise ValueError(
                f"S has NaN or infinite entries (first in rows {rows[:5].tolist()}); the influence vectors are "
                "broken. Recompute them with a larger damping, or check the model for non-finite outputs."
            )
    return S


def _check_time_limit(time_limit: float) -> float:
    if not (isinstance(time_limit, (int, float)) and time_limit > 0 and math.isfinite(time_limit)):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}.")
    return float(time_limit)


def _check_m(m: Any, n: int) -> int:
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)):
        raise TypeError(f"m (the number of samples to prune) must be an integer, got {m!r}.")
    if not 0 <= int(m) <= n:
        raise ValueError(f"m={m} samples to prune, but there are n={n}; choose 0 <= m <= {n}.")
    return int(m)


def _check_epsilon(epsilon: Any) -> float:
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise TypeError(f"epsilon must be a number, got {epsilon!r}.") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"epsilon={epsilon!r}: the budget on ||W^T S||_2 must be a finite number >= 0 (it is a norm).")
    return value


def _check_inputs(S: Any, target: Callable[[int], _Target], time_limit: float) -> tuple[np.ndarray, _Target, float]:
    """Check ``S``, then the target (which needs ``n``), then the time limit: the order in which a
    caller with several bad arguments hears about them."""
    S = _check_S(S)
    goal = target(S.shape[0])
    return S, goal, _check_time_limit(time_limit)


def _row_sq_norms(S: np.ndarray) -> np.ndarray:
    out = np.empty(S.shape[0])
    for start in range(0, S.shape[0], _ROW_CHUNK):
        block = np.asarray(S[start : start + _ROW_CHUNK], dtype=np.float64)
        out[start : start + block.shape[0]] = np.einsum("ij,ij->i", block, block)
    return out


def _masked_sum(S: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``S^T W`` in float64, chunk by chunk (no full-size copy)."""
    z = np.zeros(S.shape[1])
    for start in range(0, S.shape[0], _ROW_CHUNK):
        chunk_mask = mask[start : start + _ROW_CHUNK]
        if chunk_mask.any():
            z += S[start : start + _ROW_CHUNK][chunk_mask].sum(axis=0, dtype=np.float64)
    return z


def _norm(S: np.ndarray, mask: np.ndarray) -> float:
    return float(np.linalg.norm(_masked_sum(S, mask)))


def subset_norm(S: np.ndarray, pruned: np.ndarray) -> float:
    """``||sum_{i in pruned} S_i||_2`` in float64."""
    S = np.asarray(S)
    mask = np.zeros(S.shape[0], dtype=bool)
    mask[np.asarray(pruned, dtype=np.int64)] = True
    return _norm(S, mask)


def _lowest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest values, smallest first."""
    k = min(k, values.size)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(values, k - 1)[:k] if k < values.size else np.arange(values.size)
    return part[np.argsort(values[part], kind="stable")]


def _one_blas_thread() -> AbstractContextManager[Any]:
    """Small BLAS/LAPACK calls (QR and SVD of thin matrices, many matrix-vector products) run far
    faster single-threaded, above all on a busy machine; the large products stay multi-threaded."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
