"""The rank-``k`` sketch of ``S``: a randomised truncated SVD and the residuals it leaves.

``S`` is ``n x d`` with ``d`` in the thousands; the relaxation, screened greedy and pair screening
of local search all work on ``B = U_k Sigma_k`` (``n x k``, ``B_i . B_j ~= S_i . S_j``) instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from lightning_prune.influence.solvers.common import _one_blas_thread


def truncated_svd(
    S: np.ndarray, rank: int, *, seed: int = 0, power_iterations: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Randomised rank-``rank`` SVD of ``S``: returns ``(U_k, sigma_k)`` (float64, ``[n, k]``, ``[k]``).

    ``S`` is only multiplied, never copied; the products run in ``S``'s dtype."""
    n, d = S.shape
    k = max(1, min(rank, n, d))
    width = min(min(n, d), k + 10)
    rng = np.random.default_rng(seed)
    Y = S @ rng.standard_normal((d, width)).astype(S.dtype)
    for _ in range(power_iterations):
        with _one_blas_thread():
            Q, _ = np.linalg.qr(Y.astype(np.float64))
        Z = S.T @ Q.astype(S.dtype)
        with _one_blas_thread():
            Q2, _ = np.linalg.qr(Z.astype(np.float64))
        Y = S @ Q2.astype(S.dtype)
    with _one_blas_thread():
        Q, _ = np.linalg.qr(Y.astype(np.float64))
    B = np.asarray(Q.T.astype(S.dtype) @ S, dtype=np.float64)
    with _one_blas_thread():
        Ub, sigma, _ = np.linalg.svd(B, full_matrices=False)
    return Q @ Ub[:, :k], sigma[:k]


@dataclass
class _Sketch:
    """Rank-``k`` sketch of ``S``: ``B = U_k Sigma_k`` with ``B_i . B_j ~= S_i . S_j``, the RMS row
    norm ``s0`` and the truncation residual ``rho_i = ||S_i||^2 - ||B_i||^2`` of every row."""

    B: np.ndarray
    rho: np.ndarray
    s0: float
    seconds: float

    @property
    def rank(self) -> int:
        return int(self.B.shape[1])


def _make_sketch(S: np.ndarray, sq: np.ndarray, rank: int, seed: int) -> _Sketch:
    started = time.perf_counter()
    U, sigma = truncated_svd(S, rank, seed=seed)
    B = U * sigma
    rho = sq - np.einsum("ij,ij->i", B, B)
    rho[rho < 1e-9 * max(float(sq.max()), 1e-300)] = 0.0  # rows the rank-k part holds (up to rounding)
    return _Sketch(
        B=B.astype(np.float32), rho=rho, s0=math.sqrt(float(sq.mean())), seconds=time.perf_counter() - started
    )


def _needs_sketch(n: int, d: int, steps: int) -> bool:
    """Whether textbook greedy (one pass over ``S`` per step) would be too slow."""
    return steps * n * d > 2e10
