"""The :class:`PruningSolution` every solver returns, and the one place that builds it.

Building it in one place keeps the reported objective honest: whatever path found the pruned set,
``objective`` is recomputed from ``S`` in float64 rather than taken from a solver's own estimate.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lightning_prune.influence.solvers.common import _masked_sum, _row_sq_norms, _Target


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


def _heuristic_status(timed_out: bool) -> str:
    return "time_limit" if timed_out else "feasible"


def _finish(
    S: np.ndarray,
    mask: np.ndarray,
    target: _Target,
    *,
    method: str,
    status: str,
    started: float,
    bound: float | None,
    details: dict[str, Any] | None = None,
) -> PruningSolution:
    pruned = np.flatnonzero(mask).astype(np.int64)
    objective = float(np.linalg.norm(_masked_sum(S, mask))) if pruned.size else 0.0
    return PruningSolution(
        pruned=pruned,
        num_samples=int(S.shape[0]),
        objective=objective,
        bound=bound,
        problem=target.problem,
        method=method,
        status=status,
        time_s=time.perf_counter() - started,
        m=target.m,
        epsilon=target.epsilon,
        details=details or {},
    )


def _warn_if_nothing_pruned(solution: PruningSolution, S: np.ndarray, *, stacklevel: int) -> PruningSolution:
    """Warn when an epsilon problem prunes nothing. ``stacklevel`` counts from this function, so that
    the warning points at the public function's caller: 3 when the public function calls it."""
    if solution.problem == "epsilon" and solution.num_pruned == 0:
        smallest = math.sqrt(float(_row_sq_norms(S).min()))
        warnings.warn(
            f"epsilon={solution.epsilon:.4g} is too small to prune anything: no subset was found with "
            f"||W^T S|| <= epsilon (the smallest single-sample influence norm is {smallest:.4g}). Nothing is "
            "pruned; raise epsilon, or ask for a pruning ratio instead.",
            UserWarning,
            stacklevel=stacklevel,
        )
    return solution
