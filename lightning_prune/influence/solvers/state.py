"""The incremental state that greedy and local search move: a pruned set with ``z`` and ``a``.

Every move is scored through ``a = S z``: adding sample ``j`` changes ``||z||^2`` by ``sq_j + 2
a_j``, removing it by ``sq_j - 2 a_j``. Keeping ``z`` and ``a`` up to date after each move costs one
product with ``S`` instead of a fresh sum over the pruned set.
"""

from __future__ import annotations

import numpy as np

from lightning_prune.influence.solvers.common import _masked_sum


class _State:
    """A pruned set with ``z = S^T W`` (float64, updated exactly), ``a = S z`` and ``||z||^2``."""

    # The incremental updates of ``a`` run in ``S``'s dtype (often float32) and accumulate rounding
    # error; recomputing ``a`` after this many moves bounds the drift.
    RESCORE_EVERY = 25

    z: np.ndarray
    zz: float
    a: np.ndarray

    def __init__(self, S: np.ndarray, sq: np.ndarray, mask: np.ndarray) -> None:
        self.S = S
        self.sq = sq
        self.mask = mask.copy()
        self.refresh()

    def refresh(self) -> None:
        """Recompute ``z`` from the mask and ``a`` from ``z`` (removes any accumulated drift)."""
        self.z = _masked_sum(self.S, self.mask)
        self.zz = float(self.z @ self.z)
        self.rescore()

    def rescore(self) -> None:
        """Recompute ``a = S z`` (one pass over ``S``)."""
        self.a = self.times(self.z)
        self._updates = 0

    def times(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(self.S @ v.astype(self.S.dtype, copy=False), dtype=np.float64)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.S[np.sort(np.asarray(idx, dtype=np.int64))], dtype=np.float64)

    def gram(self, idx: np.ndarray) -> np.ndarray:
        R = np.asarray(self.S[idx], dtype=np.float64)
        return R @ R.T

    def apply(self, add: np.ndarray, remove: np.ndarray) -> None:
        add = np.asarray(add, dtype=np.int64)
        remove = np.asarray(remove, dtype=np.int64)
        if add.size == 0 and remove.size == 0:
            return
        delta = np.zeros(self.S.shape[1])
        if add.size:
            delta += self.rows(add).sum(axis=0)
            self.mask[add] = True
        if remove.size:
            delta -= self.rows(remove).sum(axis=0)
            self.mask[remove] = False
        self.z += delta
        self.zz = float(self.z @ self.z)
        self._updates += 1
        if self._updates >= self.RESCORE_EVERY:
            self.rescore()
        else:
            self.a += self.times(delta)

    @property
    def count(self) -> int:
        return int(self.mask.sum())
