"""The two public solvers and the skeleton they share.

Both problems go through the same phases: check the inputs, answer trivial cases, solve exactly
when ``n`` is small, else sketch ``S`` and run the problem's relaxation path (relaxation, rounding,
local search), then build the :class:`PruningSolution`. :func:`_solve` is that skeleton; what
differs lives in :mod:`.cardinality` and :mod:`.epsilon`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lightning_prune.influence.solvers.cardinality import _CardinalityProblem
from lightning_prune.influence.solvers.common import (
    _check_epsilon,
    _check_inputs,
    _check_m,
    _check_method,
    _row_sq_norms,
    _Target,
)
from lightning_prune.influence.solvers.epsilon import _EpsilonProblem
from lightning_prune.influence.solvers.exact import _exact_solve
from lightning_prune.influence.solvers.greedy import _greedy, _greedy_solution
from lightning_prune.influence.solvers.result import PruningSolution, _warn_if_nothing_pruned
from lightning_prune.influence.solvers.run import _Run
from lightning_prune.influence.solvers.sketch import _make_sketch, _Sketch


class _Problem(Protocol):
    """What differs between the two problems along :func:`_solve`."""

    @property
    def rank(self) -> int: ...

    @property
    def seed(self) -> int: ...

    def trivial(self, run: _Run) -> PruningSolution | None:
        """The answer where no search is needed, else ``None``."""
        ...

    def polish_hint(self, run: _Run, greedy: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Improve greedy's answer into the exact solver's hint; returns it with its details."""
        ...

    def check_exact(
        self, run: _Run, mask: np.ndarray | None, status: str, details: dict[str, Any]
    ) -> tuple[np.ndarray | None, str]:
        """SCIP's answer made valid for the problem, or ``None`` where it has no valid one."""
        ...

    def prefer(self, run: _Run, hint: np.ndarray, mask: np.ndarray, status: str) -> tuple[np.ndarray, str]:
        """The better of the hint and SCIP's answer, with its status."""
        ...

    def relaxation_path(self, run: _Run, sketch: _Sketch, details: dict[str, Any]) -> PruningSolution:
        """The scalable path from the sketch on."""
        ...


@dataclass(frozen=True)
class _Settings:
    """The arguments both public solvers take, as given (checked in :func:`_solve`)."""

    started: float
    method: str
    time_limit: float
    exact_max_n: int
    verbose: bool


def _solve(S: Any, target_of: Callable[[int], _Target], problem: _Problem, settings: _Settings) -> PruningSolution:
    """Check the inputs, solve, and warn when an epsilon problem prunes nothing. Call it from the
    public solver itself (the warning's ``stacklevel`` counts on it)."""
    _check_method(settings.method)
    S, target, time_limit = _check_inputs(S, target_of, settings.time_limit)
    if settings.method == "greedy":
        solution = _greedy_solution(
            S, target, started=time.perf_counter(), time_limit=time_limit, rank=problem.rank, seed=problem.seed
        )
    else:
        run = _Run(S, _row_sq_norms(S), target, settings.started, time_limit, settings.verbose)
        solution = _solve_run(run, problem, settings.method, settings.exact_max_n)
    return _warn_if_nothing_pruned(solution, S, stacklevel=4)


def _solve_run(run: _Run, problem: _Problem, method: str, exact_max_n: int) -> PruningSolution:
    trivial = problem.trivial(run)
    if trivial is not None:
        return trivial
    if method == "exact" or (method == "auto" and run.n <= exact_max_n):
        return _exact_path(run, problem, warm=method == "auto")
    sketch = _make_sketch(run.S, run.sq, problem.rank, problem.seed)
    return problem.relaxation_path(run, sketch, {"svd_s": sketch.seconds, "rank": sketch.rank})


def _exact_path(run: _Run, problem: _Problem, *, warm: bool) -> PruningSolution:
    """SCIP, warm-started (``warm``) with a heuristic's answer found in the first fifth of the time
    limit; that answer also stands in where SCIP finds none, or a worse one."""
    hint: np.ndarray | None = None
    details: dict[str, Any] = {}
    if warm:
        target = run.target
        greedy, _ = _greedy(run.S, run.sq, m=target.m, limit_sq=target.limit_sq, deadline=run.after(0.1), sketch=None)
        hint, details = problem.polish_hint(run, greedy)
    remaining = max(0.5, run.deadline - time.perf_counter())
    exact, bound, status, info = _exact_solve(run.S, run.target, time_limit=remaining, hint=hint, verbose=run.verbose)
    details.update(info)
    mask, status = problem.check_exact(run, exact, status, details)
    if mask is None:
        if hint is None:
            raise RuntimeError(
                f"SCIP found no solution within {run.time_limit:.0f} s ({info['termination']}); raise time_limit "
                "or use method='relaxation'."
            )
        mask, status = hint, "feasible"
    elif hint is not None:
        mask, status = problem.prefer(run, hint, mask, status)
    return run.finish(mask, method="exact(gscip)", status=status, bound=bound, details=details)


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
        method: ``"auto"``, ``"exact"``, ``"relaxation"`` or ``"greedy"`` (see
            :mod:`lightning_prune.influence.solvers`).
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
        verbose: print the exact solver's log (otherwise OR-Tools prints nothing).
    """
    settings = _Settings(time.perf_counter(), method, time_limit, exact_max_n, verbose)
    problem = _CardinalityProblem(rank, seed, threads, warm_start_greedy, compute_bound, rounding_trials)
    return _solve(S, lambda n: _Target(m=_check_m(m, n)), problem, settings)


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
    settings = _Settings(time.perf_counter(), method, time_limit, exact_max_n, verbose)
    problem = _EpsilonProblem(rank, seed, threads, warm_start_greedy, max_relaxations, max_probes)
    return _solve(S, lambda n: _Target(epsilon=_check_epsilon(epsilon)), problem, settings)
