"""Choosing the samples to prune from influence vectors ``S`` (``[n, d]``), with OR-Tools.

``W`` is the 0/1 pruning indicator (``W_i = 1``: sample ``i`` is pruned) and ``z = S^T W`` the
predicted change of the last-layer parameters when the pruned samples are left out. Two problems
(Yang et al., ICLR 2023, Eq. 3 and 4):

* **cardinality-guaranteed** (:func:`solve_cardinality`): minimise ``||S^T W||_2`` subject to
  ``sum W = m``;
* **generalisation-guaranteed** (:func:`solve_epsilon`): maximise ``sum W`` subject to
  ``||S^T W||_2 <= epsilon``.

Methods:

* ``"exact"``: MathOpt with SCIP (GSCIP), binary ``W`` and continuous ``z = A^T W`` where
  ``A A^T = S S^T`` (``A = S``, or ``U Sigma`` of a thin SVD when ``d > n``), quadratic objective
  (cardinality) or quadratic constraint (epsilon). Proves optimality for small ``n`` (tens).
* ``"relaxation"``: the scalable path. A rank-``k`` randomised SVD ``S ~= U_k Sigma_k V_k^T``
  (the "sketch" ``B = U_k Sigma_k``, ``B_i . B_j ~= S_i . S_j``), rescaled so rows have RMS norm 1;
  a convex relaxation (``0 <= W <= 1``) solved with PDLP: minimise ``||B^T W||^2 + sum_i rho_i W_i``
  subject to ``sum W = m``, where ``rho_i`` is row ``i``'s truncation residual (on 0/1 vectors this
  is ``||S^T W||^2`` up to the residuals' cross terms), a QP with a diagonal objective matrix in
  ``(W, z = B^T W)``; rounding (top-``m`` and randomised); local search on the full ``S``. Local
  search keeps ``z = S^T W`` and ``a = S z`` up to date incrementally and makes swap moves (one
  pruned sample for one kept one) that lower ``||z||``: candidates are screened by their individual
  effect and by scoring every (pruned, kept) pair through the sketch, and a sequence of swaps
  inside a candidate set is exact and cheap through its Gram matrix. The epsilon problem bisects on
  ``m`` with the same relaxation, rounds by ordered insertion, then uses add, swap and growth moves.
  Greedy's answer is a second starting point, so the result is never worse than greedy's (when
  both finish within the time limit). The bound reported for the cardinality problem is the value
  of the pure rank-``k`` relaxation, a valid but usually weak lower bound (``||S^T W|| >=
  ||S_k^T W||``).
* ``"greedy"``: add, one at a time, the sample that keeps ``||z||`` smallest (textbook while
  ``m n d`` is small; beyond, every sample is scored through the sketch and the exact best of the
  64 best estimates is taken, with exact rescoring every 1,000 steps).
* ``"auto"``: ``"exact"`` (warm-started with the heuristic's answer) when ``n <= exact_max_n``,
  else ``"relaxation"``.

Every function returns a :class:`PruningSolution` with the objective reached, the bound the solver
proved where it has one, the method path, the status and the time taken.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_METHODS = ("auto", "exact", "relaxation", "greedy")
_ROW_CHUNK = 4096


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------


@dataclass
class PruningSolution:
    """The outcome of one selection problem.

    Attributes:
        pruned: sorted row indices of ``S`` with ``W_i = 1`` (the samples to prune).
        num_samples: ``n``, the number of rows of ``S``.
        objective: ``||S^T W||_2`` reached, in the units of ``S`` (computed in float64).
        bound: what the solver proved, where it proves something: for the cardinality problem a
            lower bound on the smallest achievable ``||S^T W||_2``; for the epsilon problem an upper
            bound on the number of samples that can be pruned. ``None`` where the method has none.
        problem: ``"cardinality"`` or ``"epsilon"``.
        method: the path taken, e.g. ``"exact(gscip)"`` or ``"svd(k=64)+pdlp+round+local-search"``.
        status: ``"optimal"`` (proved), ``"feasible"`` (a heuristic's answer, or the exact solver
            stopped early) or ``"time_limit"`` (a heuristic stage was cut short by the time limit).
        time_s: wall-clock seconds taken.
        m: the cardinality asked for (cardinality problem).
        epsilon: the norm budget (epsilon problem).
        details: per-stage diagnostics (timings, objectives after each stage, solver statistics).
    """

    pruned: np.ndarray
    num_samples: int
    objective: float
    bound: float | None
    problem: str
    method: str
    status: str
    time_s: float
    m: int | None = None
    epsilon: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def num_pruned(self) -> int:
        return int(self.pruned.size)

    def mask(self) -> np.ndarray:
        """Boolean pruning indicator ``W`` of length ``n``."""
        W = np.zeros(self.num_samples, dtype=bool)
        W[self.pruned] = True
        return W

    def kept(self) -> np.ndarray:
        """Sorted indices of the samples kept (``W_i = 0``)."""
        return np.flatnonzero(~self.mask())


# ----------------------------------------------------------------------------------------------
# Input checks and exact norms
# ----------------------------------------------------------------------------------------------


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
        raise ValueError(
            f"epsilon={epsilon!r}: the budget on ||W^T S||_2 must be a finite number >= 0 (it is a norm)."
        )
    return value


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


def subset_norm(S: np.ndarray, pruned: np.ndarray) -> float:
    """``||sum_{i in pruned} S_i||_2`` in float64."""
    S = np.asarray(S)
    mask = np.zeros(S.shape[0], dtype=bool)
    mask[np.asarray(pruned, dtype=np.int64)] = True
    return float(np.linalg.norm(_masked_sum(S, mask)))


# ----------------------------------------------------------------------------------------------
# Incremental state, sketch and the move engines
# ----------------------------------------------------------------------------------------------


def _lowest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest values, smallest first."""
    k = min(k, values.size)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(values, k - 1)[:k] if k < values.size else np.arange(values.size)
    return part[np.argsort(values[part], kind="stable")]


class _State:
    """A pruned set with ``z = S^T W`` (float64, updated exactly), ``a = S z`` and ``||z||^2``."""

    RESCORE_EVERY = 25

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


def _greedy_add(
    state: _State,
    *,
    count: int | None,
    limit_sq: float | None,
    deadline: float,
    sketch: _Sketch | None = None,
    pool: int = 64,
    rescore_every: int = 1000,
) -> tuple[int, bool]:
    # Thousands of small matrix-vector products: one BLAS thread is several times faster than two,
    # and up to 25x faster on a busy machine (thread hand-offs dominate).
    with _one_blas_thread():
        return _greedy_add_steps(
            state, count=count, limit_sq=limit_sq, deadline=deadline, sketch=sketch, pool=pool,
            rescore_every=rescore_every,
        )


def _greedy_add_steps(
    state: _State,
    *,
    count: int | None,
    limit_sq: float | None,
    deadline: float,
    sketch: _Sketch | None,
    pool: int,
    rescore_every: int,
) -> tuple[int, bool]:
    """Add samples one at a time, each the one that keeps ``||z||`` smallest, until ``count`` are
    added or (``limit_sq``) none fits under the budget.

    Without a sketch this is textbook greedy (``a = S z`` updated with one pass over ``S`` per step).
    With one, the scores of all samples are tracked through the sketch (``a += B B_j``, ``O(n k)``),
    the ``pool`` best by that estimate are scored exactly against ``z``, and the exact best of them
    is taken; ``a`` is recomputed exactly every ``rescore_every`` steps, and before stopping on the
    budget. Returns (number added, whether the deadline cut it short)."""
    n = state.mask.size
    added = 0
    if sketch is None:
        while count is None or added < count:
            score = state.sq + 2.0 * state.a
            score[state.mask] = np.inf
            j = int(np.argmin(score))
            if not np.isfinite(score[j]) or (limit_sq is not None and state.zz + score[j] > limit_sq):
                break
            if time.perf_counter() > deadline:
                if count is not None:  # complete the answer with the best-scored remaining samples
                    state.apply(_lowest(score, count - added), np.empty(0, dtype=np.int64))
                    added = count
                return added, True
            state.apply(np.array([j]), np.empty(0, dtype=np.int64))
            added += 1
        return added, False

    B = sketch.B
    inf = np.inf

    def fresh_scores() -> np.ndarray:
        score = state.sq + 2.0 * state.a
        score[state.mask] = inf
        return score

    score = fresh_scores()  # sq + 2 a, tracked through the sketch between exact rescorings
    since = 0
    exact_now = True
    while count is None or added < count:
        candidates = _lowest(score, min(pool, n - state.count))
        if candidates.size == 0 or not np.isfinite(score[candidates[0]]):
            break
        if time.perf_counter() > deadline:
            if count is not None:
                state.apply(_lowest(score, count - added), np.empty(0, dtype=np.int64))
                added = count
            return added, True
        rows = state.S[candidates]
        exact = state.sq[candidates] + 2.0 * np.asarray(rows @ state.z.astype(rows.dtype), dtype=np.float64)
        best = int(np.argmin(exact))
        if limit_sq is not None and state.zz + exact[best] > limit_sq:
            if exact_now:
                break
            state.rescore()  # the estimate may have missed a sample that fits: check with exact scores
            score, since, exact_now = fresh_scores(), 0, True
            continue
        j = int(candidates[best])
        state.mask[j] = True
        state.z += np.asarray(rows[best], dtype=np.float64)
        state.zz = float(state.z @ state.z)
        score += 2.0 * (B @ B[j])
        score[j] = inf
        added += 1
        since += 1
        exact_now = False
        if since >= rescore_every:
            state.rescore()
            score, since, exact_now = fresh_scores(), 0, True
    state.rescore()
    return added, False


def _greedy_remove(state: _State, *, limit_sq: float) -> None:
    """Remove samples, each the one whose removal leaves ``||z||`` smallest, until ``||z||^2 <=
    limit_sq`` (always reachable: the empty set has ``z = 0``). Used to repair tolerance slips."""
    while state.zz > limit_sq and state.count > 0:
        score = state.sq - 2.0 * state.a
        score[~state.mask] = np.inf
        state.apply(np.empty(0, dtype=np.int64), np.array([int(np.argmin(score))]))


def _pair_candidates(state: _State, sketch: _Sketch, pairs: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Screen all (pruned i, kept j) swaps through the sketch, ``||z - S_i + S_j||^2 - ||z||^2 ~=
    (sq_i - 2 a_i) + (sq_j + 2 a_j) - 2 B_i . B_j``; returns the pruned and kept samples of the
    ``pairs`` most promising swaps (each pruned sample with its best partner)."""
    inside = np.flatnonzero(state.mask)
    outside = np.flatnonzero(~state.mask)
    out_gain = (state.sq - 2.0 * state.a)[inside]
    in_cost = (state.sq + 2.0 * state.a)[outside].astype(np.float32)
    B_out = np.ascontiguousarray(sketch.B[outside])
    best = np.empty(inside.size)
    partner = np.empty(inside.size, dtype=np.int64)
    for start in range(0, inside.size, chunk):
        block = sketch.B[inside[start : start + chunk]] @ B_out.T
        block *= -2.0
        block += in_cost[None, :]
        j = block.argmin(axis=1)
        partner[start : start + j.size] = j
        best[start : start + j.size] = block[np.arange(j.size), j] + out_gain[start : start + j.size]
    top = _lowest(best, pairs)
    return inside[top], np.unique(outside[partner[top]])


def _swap_round(state: _State, I: np.ndarray, J: np.ndarray, inner: int, rtol: float) -> int:
    """Best-pair swaps among pruned candidates ``I`` and kept candidates ``J``, exact through their
    Gram matrix, up to ``inner`` in sequence; applied to ``state``. Returns the swaps made."""
    C = np.concatenate([I, J])
    G = state.gram(C)
    sqC = state.sq[C]
    aC = state.a[C].copy()
    inside = np.zeros(C.size, dtype=bool)
    inside[: I.size] = True
    start_inside = inside.copy()
    zz = state.zz
    for _ in range(inner):
        out_gain = np.where(inside, sqC - 2.0 * aC, np.inf)
        in_cost = np.where(inside, np.inf, sqC + 2.0 * aC)
        D = out_gain[:, None] + in_cost[None, :] - 2.0 * G
        x, y = np.unravel_index(int(np.argmin(D)), D.shape)
        change = D[x, y]
        if not change < -rtol * max(zz, 1e-300):
            break
        inside[x], inside[y] = False, True
        aC += G[:, y] - G[:, x]
        zz += change
    moved = inside != start_inside
    if not moved.any():
        return 0
    state.apply(C[moved & inside], C[moved & ~inside])
    return int((moved & inside).sum())


def _swap_improve(
    state: _State,
    *,
    deadline: float,
    sketch: _Sketch | None = None,
    block: int = 128,
    max_block: int = 1024,
    pairs: int = 256,
    inner: int = 64,
    rtol: float = 1e-9,
    target_sq: float | None = None,
) -> tuple[int, bool]:
    """Swap pruned samples for kept ones while that lowers ``||z||`` (the count is unchanged).

    Each round picks candidates, then makes exact best-pair swaps among them (:func:`_swap_round`).
    Candidates come first from the ``block`` pruned samples whose removal alone helps most and the
    ``block`` kept samples whose addition alone hurts least; when that finds nothing, from screening
    every pair through the sketch (swaps of similar samples); then from ever larger blocks up to
    ``max_block``; the search stops when none of these finds an improving swap (a local optimum of
    the screened neighbourhood), once ``||z||^2 <= target_sq`` if given, or at the deadline.
    Returns (swaps, timed out)."""
    n = state.mask.size
    swaps = 0
    stages = ["individual"] + (["pairs"] if sketch is not None else [])
    size = block
    while size <= max_block:
        stages.append(f"block{size}")
        size *= 2
    stage = 0
    while stage < len(stages):
        if time.perf_counter() > deadline:
            return swaps, True
        k = state.count
        if k == 0 or k == n or (target_sq is not None and state.zz <= target_sq):
            return swaps, False
        name = stages[stage]
        if name == "pairs":
            I, J = _pair_candidates(state, sketch, pairs)
        else:
            size = block if name == "individual" else int(name[5:])
            remove_gain = state.sq - 2.0 * state.a
            remove_gain[~state.mask] = np.inf
            add_cost = state.sq + 2.0 * state.a
            add_cost[state.mask] = np.inf
            I, J = _lowest(remove_gain, min(size, k)), _lowest(add_cost, min(size, n - k))
        before = state.zz
        made = _swap_round(state, I, J, inner, rtol)
        if made and state.zz < before:
            swaps += made
            stage = 0
            continue
        if made:  # rounding noise, no real progress
            state.refresh()
        stage += 1
    return swaps, False


# ----------------------------------------------------------------------------------------------
# Truncated SVD and the PDLP relaxation
# ----------------------------------------------------------------------------------------------


def _one_blas_thread() -> Any:
    """Small BLAS/LAPACK calls (QR and SVD of thin matrices, many matrix-vector products) run far
    faster single-threaded, above all on a busy machine; the large products stay multi-threaded."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def truncated_svd(S: np.ndarray, rank: int, *, seed: int = 0, power_iterations: int = 2) -> tuple[np.ndarray, np.ndarray]:
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


def _pdlp_relaxation(
    A: np.ndarray,
    rho: np.ndarray,
    m: float,
    *,
    time_limit: float,
    threads: int,
    initial: np.ndarray | None = None,
    tolerance: float = 1e-4,
) -> tuple[np.ndarray, float, float, str, int]:
    """min ||A^T w||^2 + rho . w  s.t.  sum w = m, 0 <= w <= 1 (``A`` is ``[n, k]``, scaled to O(1)).

    For binary ``w`` the objective is ``||S^T w||^2`` up to the truncation residual's cross terms
    (``rho . w`` is its diagonal). Solved with PDLP as a QP in ``(w, z)`` with ``z = A^T w`` and a
    diagonal objective matrix. Returns ``(w, primal objective, dual objective, termination reason,
    iterations)``."""
    import scipy.sparse as sp
    from ortools.pdlp import solve_log_pb2, solvers_pb2
    from ortools.pdlp.python import pdlp

    n, k = A.shape
    qp = pdlp.QuadraticProgram()
    qp.resize_and_initialize(n + k, k + 1)
    qp.objective_vector = np.concatenate([rho, np.zeros(k)])
    qp.set_objective_matrix_diagonal(np.concatenate([np.zeros(n), np.full(k, 2.0)]))
    qp.variable_lower_bounds = np.concatenate([np.zeros(n), np.full(k, -np.inf)])
    qp.variable_upper_bounds = np.concatenate([np.ones(n), np.full(k, np.inf)])
    rows = sp.hstack([sp.csr_matrix(A.T), -sp.identity(k, format="csr")])
    total = sp.hstack([sp.csr_matrix(np.ones((1, n))), sp.csr_matrix((1, k))])
    qp.constraint_matrix = sp.vstack([rows, total]).tocsc()
    qp.constraint_lower_bounds = np.concatenate([np.zeros(k), [float(m)]])
    qp.constraint_upper_bounds = np.concatenate([np.zeros(k), [float(m)]])
    params = solvers_pb2.PrimalDualHybridGradientParams()
    params.termination_criteria.time_sec_limit = max(0.5, time_limit)
    params.termination_criteria.eps_optimal_relative = tolerance
    params.termination_criteria.eps_optimal_absolute = tolerance
    params.num_threads = threads
    params.verbosity_level = 0
    start = None
    if initial is not None:
        start = pdlp.PrimalAndDualSolution()
        start.primal_solution = np.concatenate([initial, A.T @ initial])
        start.dual_solution = np.zeros(k + 1)
    result = pdlp.primal_dual_hybrid_gradient(qp, params, initial_solution=start)
    log = result.solve_log
    w = np.clip(np.asarray(result.primal_solution[:n]), 0.0, 1.0)
    info = log.solution_stats.convergence_information
    primal = info[0].primal_objective if info else float("nan")
    dual = info[0].dual_objective if info else float("nan")
    reason = solve_log_pb2.TerminationReason.Name(log.termination_reason)
    return w, float(primal), float(dual), reason, int(log.iteration_count)


def _ordered_insertion(S: np.ndarray, sq: np.ndarray, order: np.ndarray, limit_sq: float) -> np.ndarray:
    """Rounding for the epsilon problem: visit samples in ``order`` (most-relaxed-weight first) and
    prune each one that keeps ``||z||^2 <= limit_sq``; one pass, ``O(n d)``."""
    mask = np.zeros(S.shape[0], dtype=bool)
    z = np.zeros(S.shape[1])
    zz = 0.0
    with _one_blas_thread():
        _insert_in_order(S, sq, order, limit_sq, mask, z, zz)
    return mask


def _insert_in_order(
    S: np.ndarray, sq: np.ndarray, order: np.ndarray, limit_sq: float, mask: np.ndarray, z: np.ndarray, zz: float
) -> None:
    for start in range(0, order.size, _ROW_CHUNK):
        idx = order[start : start + _ROW_CHUNK]
        rows = np.asarray(S[idx], dtype=np.float64)
        for r, i in enumerate(idx):
            grown = zz + sq[i] + 2.0 * float(rows[r] @ z)
            if grown <= limit_sq:
                z += rows[r]
                zz = max(grown, 0.0)
                mask[i] = True


def _round_top(w: np.ndarray, count: int, tie: np.ndarray) -> np.ndarray:
    """Pruning mask of the ``count`` largest ``w`` (ties: smaller ``tie`` first)."""
    order = np.lexsort((tie, -w))
    mask = np.zeros(w.size, dtype=bool)
    mask[order[:count]] = True
    return mask


# ----------------------------------------------------------------------------------------------
# Exact: MathOpt + SCIP
# ----------------------------------------------------------------------------------------------


def _exact_solve(
    S: np.ndarray,
    *,
    m: int | None,
    epsilon: float | None,
    time_limit: float,
    hint: np.ndarray | None,
    verbose: bool,
) -> tuple[np.ndarray | None, float | None, str, dict[str, Any]]:
    """Solve one problem with SCIP through MathOpt. Returns (mask or None, bound, status, details);
    the bound is in original units (norm for cardinality, count for epsilon)."""
    from ortools.math_opt.python import mathopt
    from ortools.math_opt.solvers.gscip import gscip_pb2

    S64 = np.asarray(S, dtype=np.float64)
    n, d = S64.shape
    if d > n:
        U, sigma, _ = np.linalg.svd(S64, full_matrices=False)
        keep = sigma > sigma[0] * 1e-12 if sigma.size and sigma[0] > 0 else np.zeros(sigma.size, dtype=bool)
        A = U[:, keep] * sigma[keep]
    else:
        A = S64
    s0 = math.sqrt(float(np.mean(np.einsum("ij,ij->i", S64, S64)))) or 1.0
    A = A / s0
    model = mathopt.Model(name="influence-pruning")
    w = [model.add_binary_variable(name=f"w{i}") for i in range(n)]
    z = [model.add_variable(lb=-math.inf, ub=math.inf, name=f"z{j}") for j in range(A.shape[1])]
    for j in range(A.shape[1]):
        model.add_linear_constraint(
            mathopt.fast_sum(float(A[i, j]) * w[i] for i in range(n) if A[i, j] != 0.0) - z[j] == 0.0
        )
    norm_sq = mathopt.fast_sum(zj * zj for zj in z) if z else 0.0
    if m is not None:
        model.add_linear_constraint(mathopt.fast_sum(w) == float(m))
        model.minimize(norm_sq)
    else:
        if z:
            model.add_quadratic_constraint(expr=norm_sq, ub=(float(epsilon) / s0) ** 2)
        model.maximize(mathopt.fast_sum(w))
    model_params = None
    if hint is not None:
        values = {w[i]: float(hint[i]) for i in range(n)}
        zh = A.T @ hint.astype(np.float64)
        values.update({z[j]: float(zh[j]) for j in range(len(z))})
        model_params = mathopt.ModelSolveParameters(solution_hints=[mathopt.SolutionHint(variable_values=values)])
    params = mathopt.SolveParameters(
        time_limit=_dt.timedelta(seconds=time_limit),
        relative_gap_tolerance=0.0,
        absolute_gap_tolerance=0.0,
        enable_output=verbose,
        threads=1,
        gscip=gscip_pb2.GScipParameters(real_params={"numerics/feastol": 1e-9}),
    )
    result = mathopt.solve(model, mathopt.SolverType.GSCIP, params=params, model_params=model_params)
    reason = result.termination.reason
    details = {
        "termination": reason.name.lower(),
        "nodes": int(result.solve_stats.node_count),
        "scip_time_s": result.solve_stats.solve_time.total_seconds(),
        "rank": A.shape[1],
    }
    status = "optimal" if reason == mathopt.TerminationReason.OPTIMAL else "feasible"
    bound = None
    try:
        raw = float(result.termination.objective_bounds.dual_bound)
    except (AttributeError, TypeError, ValueError):
        raw = float("nan")
    if math.isfinite(raw):
        bound = math.sqrt(max(raw, 0.0)) * s0 if m is not None else float(math.floor(raw + 1e-6))
    if not result.has_primal_feasible_solution():
        return None, bound, "no_solution", details
    values = result.variable_values(w)
    mask = np.array([v > 0.5 for v in values], dtype=bool)
    return mask, bound, status, details


# ----------------------------------------------------------------------------------------------
# Public solvers
# ----------------------------------------------------------------------------------------------


def _finish(
    S: np.ndarray,
    mask: np.ndarray,
    *,
    problem: str,
    method: str,
    status: str,
    started: float,
    bound: float | None,
    m: int | None = None,
    epsilon: float | None = None,
    details: dict[str, Any] | None = None,
) -> PruningSolution:
    pruned = np.flatnonzero(mask).astype(np.int64)
    objective = float(np.linalg.norm(_masked_sum(S, mask))) if pruned.size else 0.0
    solution = PruningSolution(
        pruned=pruned,
        num_samples=int(S.shape[0]),
        objective=objective,
        bound=bound,
        problem=problem,
        method=method,
        status=status,
        time_s=time.perf_counter() - started,
        m=m,
        epsilon=epsilon,
        details=details or {},
    )
    if problem == "epsilon" and pruned.size == 0:
        smallest = math.sqrt(float(_row_sq_norms(S).min()))
        warnings.warn(
            f"epsilon={epsilon:.4g} is too small to prune anything: no subset was found with ||W^T S|| <= "
            f"epsilon (the smallest single-sample influence norm is {smallest:.4g}). Nothing is pruned; "
            "raise epsilon, or ask for a pruning ratio instead.",
            UserWarning,
            stacklevel=3,
        )
    return solution


def _threads(threads: int | None, nonzeros: int) -> int:
    """PDLP threads: as asked, else one for small relaxations (thread start-up and contention cost
    more than they save there) and up to four for large ones."""
    if threads is not None:
        return max(1, int(threads))
    return 1 if nonzeros < 2_000_000 else min(4, os.cpu_count() or 1)


def _greedy(
    S: np.ndarray, sq: np.ndarray, *, m: int | None, limit_sq: float | None, deadline: float,
    sketch: _Sketch | None,
) -> tuple[np.ndarray, bool]:
    state = _State(S, sq, np.zeros(S.shape[0], dtype=bool))
    _, timed_out = _greedy_add(state, count=m, limit_sq=limit_sq, deadline=deadline, sketch=sketch)
    return state.mask, timed_out


def _greedy_sketch(S: np.ndarray, sq: np.ndarray, steps: int, rank: int, seed: int) -> _Sketch | None:
    n, d = S.shape
    return _make_sketch(S, sq, rank, seed) if _needs_sketch(n, d, steps) else None


def _greedy_name(sketch: _Sketch | None) -> str:
    return "greedy" if sketch is None else f"greedy(screened, k={sketch.rank})"


def greedy_cardinality(
    S: np.ndarray, m: int, *, time_limit: float = 600.0, rank: int = 64, seed: int = 0
) -> PruningSolution:
    """Greedy baseline for the cardinality problem: add, one at a time, the sample that keeps
    ``||S^T W||`` smallest, until ``m`` are pruned.

    Textbook greedy (one pass over ``S`` per step) while ``m n d <= 2e10``; beyond, each step scores
    every sample through a rank-``rank`` sketch and takes the exact best of the 64 best estimates."""
    started = time.perf_counter()
    S = _check_S(S)
    m = _check_m(m, S.shape[0])
    time_limit = _check_time_limit(time_limit)
    sq = _row_sq_norms(S)
    sketch = _greedy_sketch(S, sq, m, rank, seed)
    mask, timed_out = _greedy(S, sq, m=m, limit_sq=None, deadline=started + time_limit, sketch=sketch)
    return _finish(
        S, mask, problem="cardinality", method=_greedy_name(sketch), status="time_limit" if timed_out else "feasible",
        started=started, bound=None, m=m,
    )


def greedy_epsilon(
    S: np.ndarray, epsilon: float, *, time_limit: float = 600.0, rank: int = 64, seed: int = 0
) -> PruningSolution:
    """Greedy baseline for the epsilon problem: add, one at a time, the sample that keeps
    ``||S^T W||`` smallest, while it stays ``<= epsilon`` (see :func:`greedy_cardinality`)."""
    started = time.perf_counter()
    S = _check_S(S)
    epsilon = _check_epsilon(epsilon)
    time_limit = _check_time_limit(time_limit)
    sq = _row_sq_norms(S)
    sketch = _greedy_sketch(S, sq, S.shape[0] // 2, rank, seed)
    mask, timed_out = _greedy(S, sq, m=None, limit_sq=epsilon**2, deadline=started + time_limit, sketch=sketch)
    return _finish(
        S, mask, problem="epsilon", method=_greedy_name(sketch), status="time_limit" if timed_out else "feasible",
        started=started, bound=None, epsilon=epsilon,
    )


def _local_search_cardinality(
    S: np.ndarray, sq: np.ndarray, mask: np.ndarray, deadline: float, sketch: _Sketch | None
) -> tuple[np.ndarray, int, bool]:
    state = _State(S, sq, mask)
    swaps, timed_out = _swap_improve(state, deadline=deadline, sketch=sketch)
    return state.mask, swaps, timed_out


def _local_search_epsilon(
    S: np.ndarray,
    sq: np.ndarray,
    mask: np.ndarray,
    epsilon: float,
    deadline: float,
    sketch: _Sketch | None,
    grow: bool = True,
) -> tuple[np.ndarray, dict[str, int], bool]:
    """From a feasible pruned set: alternate greedy additions that fit under the budget and swaps
    that lower ``||z||`` (making room for more additions) until neither helps; then growth probes:
    add ``step`` samples regardless of the budget and swap until the norm is back within it
    (accepted: ``step`` doubles; failed: discarded, ``step`` halves), until ``step`` reaches 0."""
    n = S.shape[0]
    limit_sq = epsilon**2
    state = _State(S, sq, mask)
    counts = {"added": 0, "swaps": 0, "grown": 0, "probes": 0}
    timed_out = False
    while True:
        added, timed_out = _greedy_add(state, count=None, limit_sq=limit_sq, deadline=deadline, sketch=sketch)
        counts["added"] += added
        if timed_out:
            break
        swaps, timed_out = _swap_improve(state, deadline=deadline, sketch=sketch)
        counts["swaps"] += swaps
        if timed_out or swaps == 0:  # no swap lowered ||z||, so no further addition fits
            break
    step = max(1, state.count // 50)
    while grow and not timed_out and step >= 1 and state.count < n:
        counts["probes"] += 1
        trial = _State(S, sq, state.mask)
        _, timed_out = _greedy_add(trial, count=min(step, n - trial.count), limit_sq=None, deadline=deadline, sketch=sketch)
        if not timed_out:
            _, timed_out = _swap_improve(trial, deadline=deadline, sketch=sketch, target_sq=limit_sq)
        if trial.zz <= limit_sq:
            counts["grown"] += trial.count - state.count
            state = trial
            added, timed_out = _greedy_add(state, count=None, limit_sq=limit_sq, deadline=deadline, sketch=sketch)
            counts["added"] += added
            step *= 2
        else:
            step //= 2
    state.refresh()
    _greedy_remove(state, limit_sq=limit_sq)  # only acts on a rounding-level overshoot
    return state.mask, counts, timed_out


def _norm(S: np.ndarray, mask: np.ndarray) -> float:
    return float(np.linalg.norm(_masked_sum(S, mask)))


def solve_cardinality(
    S: np.ndarray,
    m: int,
    *,
    method: str = "auto",
    time_limit: float = 60.0,
    rank: int = 64,
    exact_max_n: int = 40,
    compute_bound: bool = True,
    warm_start_greedy: bool = True,
    rounding_trials: int = 4,
    seed: int = 0,
    threads: int | None = None,
    verbose: bool = False,
) -> PruningSolution:
    """Choose ``m`` samples to prune with the smallest ``||S^T W||_2`` (cardinality-guaranteed).

    Args:
        S: ``[n, d]`` influence vectors (:class:`~lightning_prune.influence.InfluenceVectors` ``.S``).
        m: number of samples to prune, ``0 <= m <= n``.
        method: ``"auto"``, ``"exact"``, ``"relaxation"`` or ``"greedy"`` (see the module docs).
        time_limit: seconds for the whole solve (the exact solver stops with its best answer and
            bound; the heuristics stop improving).
        rank: ``k`` of the truncated SVD (relaxation, sketch-screened greedy and swap screening).
        exact_max_n: largest ``n`` that ``"auto"`` sends to the exact solver.
        compute_bound: in the relaxation path, also solve the pure rank-``k`` relaxation, whose
            value is a lower bound on the optimum (``||S^T W|| >= ||S_k^T W||``); often weak.
        warm_start_greedy: in the relaxation path, also start local search from greedy's answer
            (so the result is never worse than greedy's when both finish within the time limit).
        rounding_trials: randomised roundings of the relaxed solution tried besides top-``m``.
        seed: seed of the SVD sketch and the randomised rounding.
        threads: PDLP threads (default: 1 for small relaxations, else ``min(4, cpu_count)``).
        verbose: print the exact solver's log.
    """
    started = time.perf_counter()
    if method not in _METHODS:
        raise ValueError(f"method={method!r}: choose one of {_METHODS}.")
    S = _check_S(S)
    n, d = S.shape
    m = _check_m(m, n)
    time_limit = _check_time_limit(time_limit)
    if method == "greedy":
        return greedy_cardinality(S, m, time_limit=time_limit, rank=rank, seed=seed)
    sq = _row_sq_norms(S)
    deadline = started + time_limit
    if m in (0, n):
        mask = np.full(n, m == n)
        return _finish(S, mask, problem="cardinality", method="trivial", status="optimal", started=started,
                       bound=_norm(S, mask), m=m)
    if method == "exact" or (method == "auto" and n <= exact_max_n):
        hint = None
        details: dict[str, Any] = {}
        if method == "auto":
            greedy, _ = _greedy(S, sq, m=m, limit_sq=None, deadline=started + 0.1 * time_limit, sketch=None)
            hint, _, _ = _local_search_cardinality(S, sq, greedy, started + 0.2 * time_limit, None)
            details["heuristic_objective"] = _norm(S, hint)
        remaining = max(0.5, deadline - time.perf_counter())
        mask, bound, status, info = _exact_solve(S, m=m, epsilon=None, time_limit=remaining, hint=hint, verbose=verbose)
        details.update(info)
        if mask is None or int(mask.sum()) != m:
            if hint is None:
                raise RuntimeError(
                    f"SCIP found no solution within {time_limit:.0f} s ({info['termination']}); raise time_limit "
                    "or use method='relaxation'."
                )
            mask, status = hint, "feasible"
        elif hint is not None and _norm(S, hint) < _norm(S, mask):
            mask = hint
        return _finish(S, mask, problem="cardinality", method="exact(gscip)", status=status, started=started,
                       bound=bound, m=m, details=details)

    # Scalable path: truncated SVD -> PDLP relaxation -> rounding -> local search.
    sketch = _make_sketch(S, sq, rank, seed)
    details = {"svd_s": sketch.seconds, "rank": sketch.rank}
    if sketch.s0 == 0.0:
        return _finish(S, _round_top(np.zeros(n), m, sq), problem="cardinality", method="trivial(S=0)",
                       status="optimal", started=started, bound=0.0, m=m)
    A = sketch.B.astype(np.float64) / sketch.s0
    rho = sketch.rho / sketch.s0**2
    threads = _threads(threads, n * (sketch.rank + 1))
    t = time.perf_counter()
    w, primal, _, reason, iterations = _pdlp_relaxation(A, rho, m, time_limit=max(1.0, 0.25 * time_limit), threads=threads)
    details.update(pdlp_s=time.perf_counter() - t, pdlp_termination=reason, pdlp_iterations=iterations,
                   relaxed_objective=math.sqrt(max(primal, 0.0)) * sketch.s0)
    bound = None
    if compute_bound:
        t = time.perf_counter()
        _, _, dual0, reason0, _ = _pdlp_relaxation(
            A, np.zeros(n), m, time_limit=max(1.0, 0.1 * time_limit), threads=threads, initial=w, tolerance=1e-6
        )
        if reason0 == "TERMINATION_REASON_OPTIMAL" and math.isfinite(dual0):
            bound = math.sqrt(max(dual0, 0.0)) * sketch.s0
        details.update(bound_s=time.perf_counter() - t, bound_termination=reason0)
    rng = np.random.default_rng(seed)
    candidates = {"round-top": _round_top(w, m, sq)}
    p = np.clip(w, 1e-12, None)
    for trial in range(rounding_trials):
        rounded = np.zeros(n, dtype=bool)
        rounded[rng.choice(n, size=m, replace=False, p=p / p.sum())] = True
        candidates[f"round-random{trial}"] = rounded
    norms = {name: _norm(S, mask) for name, mask in candidates.items()}
    name = min(norms, key=norms.__getitem__)
    start_mask, start_norm = candidates[name], norms[name]
    details["rounded_objective"] = start_norm
    path = f"svd(k={sketch.rank})+pdlp+round"
    starts = {name: start_mask}
    if warm_start_greedy:
        t = time.perf_counter()
        greedy_sketch = sketch if _needs_sketch(n, d, m) else None
        greedy, _ = _greedy(S, sq, m=m, limit_sq=None, deadline=deadline, sketch=greedy_sketch)
        details.update(greedy_s=time.perf_counter() - t, greedy_objective=_norm(S, greedy))
        starts["greedy"] = greedy
    t = time.perf_counter()
    results, timed_out, swaps = {}, False, {}
    for position, (label, begin) in enumerate(starts.items()):
        share = (deadline - time.perf_counter()) / (len(starts) - position)
        improved, swaps[label], cut = _local_search_cardinality(S, sq, begin, time.perf_counter() + share, sketch)
        timed_out = timed_out or cut
        results[label] = min((_norm(S, improved), improved), (_norm(S, begin), begin), key=lambda pair: pair[0])
        details[f"local_search_objective_from_{label}"] = results[label][0]
    best = min(results, key=lambda label: results[label][0])
    mask = results[best][1]
    if best == "greedy":
        path += "+greedy-start"
    details.update(start=best, local_search_s=time.perf_counter() - t, swaps=swaps[best])
    return _finish(S, mask, problem="cardinality", method=path + "+local-search",
                   status="time_limit" if timed_out else "feasible", started=started, bound=bound, m=m, details=details)


def solve_epsilon(
    S: np.ndarray,
    epsilon: float,
    *,
    method: str = "auto",
    time_limit: float = 60.0,
    rank: int = 64,
    exact_max_n: int = 40,
    warm_start_greedy: bool = True,
    max_relaxations: int = 8,
    max_probes: int = 6,
    seed: int = 0,
    threads: int | None = None,
    verbose: bool = False,
) -> PruningSolution:
    """Prune as many samples as possible with ``||S^T W||_2 <= epsilon`` (generalisation-guaranteed).

    When no subset fits (``epsilon`` too small), returns an empty pruned set with a warning.

    The relaxation path (A) bisects on the pruned count ``m`` of the cardinality relaxation (its
    optimum is convex in ``m`` and zero at ``m = 0``, so nondecreasing) with at most
    ``max_relaxations`` PDLP solves, for the largest ``m`` whose relaxed value fits; (B) takes the
    better of two feasible starts: the samples in decreasing relaxed weight, each pruned if it keeps
    the norm within budget, and greedy; (C) bisects between that count and the relaxed count with
    at most ``max_probes`` probes (round the relaxation at the midpoint, swap until the norm fits);
    (D) finishes with add, swap and growth moves. Other arguments as in :func:`solve_cardinality`.
    There is no bound on this path (the exact solver proves one: the most samples any subset within
    budget can hold).
    """
    started = time.perf_counter()
    if method not in _METHODS:
        raise ValueError(f"method={method!r}: choose one of {_METHODS}.")
    S = _check_S(S)
    n, d = S.shape
    epsilon = _check_epsilon(epsilon)
    time_limit = _check_time_limit(time_limit)
    if method == "greedy":
        return greedy_epsilon(S, epsilon, time_limit=time_limit, rank=rank, seed=seed)
    sq = _row_sq_norms(S)
    deadline = started + time_limit
    limit_sq = epsilon**2
    if method == "exact" or (method == "auto" and n <= exact_max_n):
        hint = None
        details: dict[str, Any] = {}
        if method == "auto":
            greedy, _ = _greedy(S, sq, m=None, limit_sq=limit_sq, deadline=started + 0.1 * time_limit, sketch=None)
            hint, _, _ = _local_search_epsilon(S, sq, greedy, epsilon, started + 0.2 * time_limit, None)
            details["heuristic_pruned"] = int(hint.sum())
        remaining = max(0.5, deadline - time.perf_counter())
        mask, bound, status, info = _exact_solve(S, m=None, epsilon=epsilon, time_limit=remaining, hint=hint, verbose=verbose)
        details.update(info)
        if mask is not None and _norm(S, mask) > epsilon:
            # SCIP's feasibility tolerance let a hair-width violation through: repair it.
            state = _State(S, sq, mask)
            _greedy_remove(state, limit_sq=limit_sq)
            mask, status = state.mask, "feasible"
            details["repaired_tolerance_violation"] = True
        if mask is None:
            if hint is None:
                raise RuntimeError(
                    f"SCIP found no solution within {time_limit:.0f} s ({info['termination']}); raise time_limit "
                    "or use method='relaxation'."
                )
            mask, status = hint, "feasible"
        elif hint is not None and int(hint.sum()) > int(mask.sum()):
            mask, status = hint, "feasible"
        return _finish(S, mask, problem="epsilon", method="exact(gscip)", status=status, started=started,
                       bound=bound, epsilon=epsilon, details=details)

    sketch = _make_sketch(S, sq, rank, seed)
    details = {"svd_s": sketch.seconds, "rank": sketch.rank}
    path = f"svd(k={sketch.rank})+pdlp-bisection+ordered-rounding"
    order = np.argsort(sq, kind="stable")
    relaxed_count, w_relaxed = n, None
    if sketch.s0 > 0.0:
        # Phase A: f(m) = relaxed min of ||B^T w||^2 + rho . w over sum w = m is convex with
        # f(0) = 0, so nondecreasing: bisect for the largest m with f(m) <= epsilon^2.
        A = sketch.B.astype(np.float64) / sketch.s0
        rho = sketch.rho / sketch.s0**2
        threads = _threads(threads, n * (sketch.rank + 1))
        target = limit_sq / sketch.s0**2
        t = time.perf_counter()
        lo, hi, w_relaxed = 0, n, np.zeros(n)
        everything = np.ones(n)
        if float(np.sum((A.T @ everything) ** 2) + rho.sum()) <= target:
            lo, w_relaxed = n, everything
        solves = 0
        per_solve = max(0.5, 0.25 * time_limit / max(1, max_relaxations))
        while hi - lo > max(1, n // 1000) and solves < max_relaxations:
            mid = (lo + hi) // 2
            w, primal, _, _, _ = _pdlp_relaxation(A, rho, mid, time_limit=per_solve, threads=threads, initial=w_relaxed)
            solves += 1
            if primal <= target:
                lo, w_relaxed = mid, w
            else:
                hi = mid
        relaxed_count = lo
        details.update(pdlp_s=time.perf_counter() - t, pdlp_solves=solves, relaxed_count=lo)
        order = np.lexsort((sq, -w_relaxed))
    # Phase B: feasible starting points: ordered insertion of the relaxed solution, and greedy.
    name, best = "rounded", _ordered_insertion(S, sq, order, limit_sq)
    details["rounded_pruned"] = int(best.sum())
    if warm_start_greedy:
        t = time.perf_counter()
        greedy_sketch = sketch if _needs_sketch(n, d, n // 2) else None
        greedy, _ = _greedy(S, sq, m=None, limit_sq=limit_sq, deadline=deadline, sketch=greedy_sketch)
        details.update(greedy_s=time.perf_counter() - t, greedy_pruned=int(greedy.sum()))
        if int(greedy.sum()) > int(best.sum()):
            name, best = "greedy", greedy
            path += "+greedy-start"
    details["start"] = name
    # Phase C: probes between the best feasible count and the relaxed count: round the relaxed
    # solution at the midpoint and swap until the norm fits (accepted) or a local optimum (rejected).
    t = time.perf_counter()
    lo, hi = int(best.sum()), relaxed_count
    probes = accepted = 0
    if w_relaxed is not None and hi > lo:
        while hi - lo > max(1, n // 1000) and probes < max_probes and time.perf_counter() < deadline:
            mid = (lo + hi + 1) // 2
            w, _, _, _, _ = _pdlp_relaxation(
                A, rho, mid, time_limit=max(0.5, 0.1 * time_limit), threads=threads, initial=w_relaxed
            )
            share = max(1.0, 0.5 * (deadline - time.perf_counter()) / max(1, max_probes - probes))
            state = _State(S, sq, _round_top(w, mid, sq))
            _swap_improve(state, deadline=time.perf_counter() + share, sketch=sketch, target_sq=limit_sq)
            probes += 1
            if state.zz <= limit_sq:
                _greedy_add(state, count=None, limit_sq=limit_sq, deadline=deadline, sketch=sketch)
                best, lo, accepted = state.mask.copy(), state.count, accepted + 1
            else:
                hi = mid - 1
        if accepted:
            path += "+probes"
    details.update(probe_s=time.perf_counter() - t, probes=probes, probes_accepted=accepted, probed_pruned=int(best.sum()))
    # Phase D: add, swap and growth moves from the best feasible set.
    t = time.perf_counter()
    mask, counts, timed_out = _local_search_epsilon(S, sq, best, epsilon, deadline, sketch)
    if int(mask.sum()) < int(best.sum()):
        mask = best
    details.update(local_search_s=time.perf_counter() - t, **{f"local_{key}": v for key, v in counts.items()})
    return _finish(S, mask, problem="epsilon", method=path + "+local-search",
                   status="time_limit" if timed_out else "feasible", started=started, bound=None,
                   epsilon=epsilon, details=details)
