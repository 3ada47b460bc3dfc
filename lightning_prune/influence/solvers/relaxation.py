"""The convex relaxation of the selection problems on the sketch (PDLP), and its rounding to 0/1.

The exact problem is a binary QP that SCIP only closes for tens of samples; relaxing ``W`` to
``[0, 1]`` on the rank-``k`` sketch gives a QP with a diagonal objective matrix that PDLP (a
first-order method) solves at ``n`` in the tens of thousands. Its solution is then rounded to a
pruned set that local search starts from.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from lightning_prune.influence.solvers.common import _ROW_CHUNK, _one_blas_thread
from lightning_prune.influence.solvers.sketch import _Sketch

if TYPE_CHECKING:
    from ortools.pdlp import solvers_pb2
    from ortools.pdlp.python import pdlp


class _Relaxed(NamedTuple):
    """One PDLP solve: the relaxed ``w`` (clipped to ``[0, 1]``), the primal and dual objective
    values, PDLP's termination reason and its iteration count."""

    w: np.ndarray
    primal: float
    dual: float
    reason: str
    iterations: int


def _threads(threads: int | None, nonzeros: int) -> int:
    """PDLP threads: as asked, else one for small relaxations (thread start-up and contention cost
    more than they save there) and up to four for large ones."""
    if threads is not None:
        return max(1, int(threads))
    return 1 if nonzeros < 2_000_000 else min(4, os.cpu_count() or 1)


@dataclass
class _Relaxation:
    """The relaxation on a sketch, rescaled so rows have RMS norm 1 (PDLP's tolerances are absolute
    as well as relative, so the problem is kept at O(1)): ``A = B / s0``, ``rho / s0^2``."""

    A: np.ndarray
    rho: np.ndarray
    s0: float
    threads: int

    @classmethod
    def of(cls, sketch: _Sketch, threads: int | None) -> _Relaxation:
        n = sketch.B.shape[0]
        return cls(
            A=sketch.B.astype(np.float64) / sketch.s0,
            rho=sketch.rho / sketch.s0**2,
            s0=sketch.s0,
            threads=_threads(threads, n * (sketch.rank + 1)),
        )

    def solve(self, m: float, *, time_limit: float, initial: np.ndarray | None = None) -> _Relaxed:
        return _pdlp_relaxation(self.A, self.rho, m, time_limit=time_limit, threads=self.threads, initial=initial)

    def lower_bound(self, m: int, *, time_limit: float, initial: np.ndarray) -> tuple[float | None, str]:
        """A lower bound on ``min ||S^T W||`` over ``sum W = m`` (in the units of ``S``) from the
        pure rank-``k`` relaxation (no residuals, since ``||S^T W|| >= ||S_k^T W||``): its dual
        value, trusted only when PDLP reports optimality. Returns (bound or None, reason)."""
        zeros = np.zeros(self.A.shape[0])
        relaxed = _pdlp_relaxation(
            self.A, zeros, m, time_limit=time_limit, threads=self.threads, initial=initial, tolerance=1e-6
        )
        if relaxed.reason == "TERMINATION_REASON_OPTIMAL" and math.isfinite(relaxed.dual):
            return math.sqrt(max(relaxed.dual, 0.0)) * self.s0, relaxed.reason
        return None, relaxed.reason


def _pdlp_relaxation(
    A: np.ndarray,
    rho: np.ndarray,
    m: float,
    *,
    time_limit: float,
    threads: int,
    initial: np.ndarray | None = None,
    tolerance: float = 1e-4,
) -> _Relaxed:
    """min ||A^T w||^2 + rho . w  s.t.  sum w = m, 0 <= w <= 1 (``A`` is ``[n, k]``, scaled to O(1)).

    For binary ``w`` the objective is ``||S^T w||^2`` up to the truncation residual's cross terms
    (``rho . w`` is its diagonal). Solved with PDLP as a QP in ``(w, z)`` with ``z = A^T w`` and a
    diagonal objective matrix. Returns ``(w, primal objective, dual objective, termination reason,
    iterations)``; PDLP prints nothing (``verbosity_level = 0``)."""
    from ortools.pdlp import solve_log_pb2
    from ortools.pdlp.python import pdlp

    n, k = A.shape
    qp = _relaxation_qp(A, rho, m)
    start = None
    if initial is not None:
        start = pdlp.PrimalAndDualSolution()
        start.primal_solution = np.concatenate([initial, A.T @ initial])
        start.dual_solution = np.zeros(k + 1)
    result = pdlp.primal_dual_hybrid_gradient(qp, _pdlp_params(time_limit, threads, tolerance), initial_solution=start)
    log = result.solve_log
    w = np.clip(np.asarray(result.primal_solution[:n]), 0.0, 1.0)
    info = log.solution_stats.convergence_information
    primal = info[0].primal_objective if info else float("nan")
    dual = info[0].dual_objective if info else float("nan")
    reason = solve_log_pb2.TerminationReason.Name(log.termination_reason)
    return _Relaxed(w, float(primal), float(dual), reason, int(log.iteration_count))


def _relaxation_qp(A: np.ndarray, rho: np.ndarray, m: float) -> pdlp.QuadraticProgram:
    """The QP of :func:`_pdlp_relaxation` in ``(w, z)``: ``k`` rows ``A^T w - z = 0`` and one row
    ``sum w = m``."""
    import scipy.sparse as sp
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
    return qp


def _pdlp_params(time_limit: float, threads: int, tolerance: float) -> solvers_pb2.PrimalDualHybridGradientParams:
    from ortools.pdlp import solvers_pb2

    params = solvers_pb2.PrimalDualHybridGradientParams()
    params.termination_criteria.time_sec_limit = max(0.5, time_limit)
    params.termination_criteria.eps_optimal_relative = tolerance
    params.termination_criteria.eps_optimal_absolute = tolerance
    params.num_threads = threads
    # Above 0, every solve prints its parameters and problem statistics, and the scalable path
    # makes up to a dozen solves.
    params.verbosity_level = 0
    return params


def _round_top(w: np.ndarray, count: int, tie: np.ndarray) -> np.ndarray:
    """Pruning mask of the ``count`` largest ``w`` (ties: smaller ``tie`` first)."""
    order = np.lexsort((tie, -w))
    mask = np.zeros(w.size, dtype=bool)
    mask[order[:count]] = True
    return mask


def _random_roundings(w: np.ndarray, count: int, trials: int, seed: int) -> dict[str, np.ndarray]:
    """``trials`` pruned sets of ``count`` samples drawn without replacement with probability
    proportional to ``w``: top-``count`` rounding misses sets the relaxation spreads weight over."""
    rng = np.random.default_rng(seed)
    p = np.clip(w, 1e-12, None)
    roundings = {}
    for trial in range(trials):
        rounded = np.zeros(w.size, dtype=bool)
        rounded[rng.choice(w.size, size=count, replace=False, p=p / p.sum())] = True
        roundings[f"round-random{trial}"] = rounded
    return roundings


def _ordered_insertion(S: np.ndarray, sq: np.ndarray, order: np.ndarray, limit_sq: float) -> np.ndarray:
    """Rounding for the epsilon problem: visit samples in ``order`` (most-relaxed-weight first) and
    prune each one that keeps ``||z||^2 <= limit_sq``; one pass, ``O(n d)``."""
    mask = np.zeros(S.shape[0], dtype=bool)
    z = np.zeros(S.shape[1])
    with _one_blas_thread():
        _insert_in_order(S, sq, order, limit_sq, mask, z)
    return mask


def _insert_in_order(
    S: np.ndarray, sq: np.ndarray, order: np.ndarray, limit_sq: float, mask: np.ndarray, z: np.ndarray
) -> None:
    zz = 0.0
    for start in range(0, order.size, _ROW_CHUNK):
        idx = order[start : start + _ROW_CHUNK]
        rows = np.asarray(S[idx], dtype=np.float64)
        for r, i in enumerate(idx):
            grown = zz + sq[i] + 2.0 * float(rows[r] @ z)
            if grown <= limit_sq:
                z += rows[r]
                zz = max(grown, 0.0)
                mask[i] = True
