"""Greedy selection: add, one at a time, the sample that keeps ``||z||`` smallest.

It is a baseline in its own right (:func:`greedy_cardinality`, :func:`greedy_epsilon`), the warm
start of the exact solver and of local search, and the "add" move of the epsilon local search.
"""

from __future__ import annotations

import time

import numpy as np

from lightning_prune.influence.solvers.common import (
    _check_epsilon,
    _check_inputs,
    _check_m,
    _lowest,
    _one_blas_thread,
    _row_sq_norms,
    _Target,
)
from lightning_prune.influence.solvers.result import (
    PruningSolution,
    _finish,
    _heuristic_status,
    _warn_if_nothing_pruned,
)
from lightning_prune.influence.solvers.sketch import _make_sketch, _needs_sketch, _Sketch
from lightning_prune.influence.solvers.state import _State


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
    """Add samples one at a time, each the one that keeps ``||z||`` smallest, until ``count`` are
    added or (``limit_sq``) none fits under the budget.

    Without a sketch this is textbook greedy (``a = S z`` updated with one pass over ``S`` per step).
    With one, the scores of all samples are tracked through the sketch (``a += B B_j``, ``O(n k)``),
    the ``pool`` best by that estimate are scored exactly against ``z``, and the exact best of them
    is taken; ``a`` is recomputed exactly every ``rescore_every`` steps, and before stopping on the
    budget. Returns (number added, whether the deadline cut it short)."""
    # Thousands of small matrix-vector products: one BLAS thread is several times faster than two,
    # and up to 25x faster on a busy machine (thread hand-offs dominate).
    with _one_blas_thread():
        if sketch is None:
            return _textbook_greedy(state, count, limit_sq, deadline)
        return _screened_greedy(state, count, limit_sq, deadline, sketch, pool=pool, rescore_every=rescore_every)


def _fill_at_deadline(state: _State, score: np.ndarray, count: int | None, added: int) -> int:
    """Out of time: a cardinality answer still needs ``count`` samples, so take the best-scored
    remaining ones at once. Returns the new number added."""
    if count is None:
        return added
    state.apply(_lowest(score, count - added), np.empty(0, dtype=np.int64))
    return count


def _textbook_greedy(state: _State, count: int | None, limit_sq: float | None, deadline: float) -> tuple[int, bool]:
    added = 0
    while count is None or added < count:
        score = state.sq + 2.0 * state.a
        score[state.mask] = np.inf
        j = int(np.argmin(score))
        if not np.isfinite(score[j]) or (limit_sq is not None and state.zz + score[j] > limit_sq):
            break
        if time.perf_counter() > deadline:
            return _fill_at_deadline(state, score, count, added), True
        state.apply(np.array([j]), np.empty(0, dtype=np.int64))
        added += 1
    return added, False


def _screened_greedy(
    state: _State,
    count: int | None,
    limit_sq: float | None,
    deadline: float,
    sketch: _Sketch,
    *,
    pool: int,
    rescore_every: int,
) -> tuple[int, bool]:
    n = state.mask.size
    B = sketch.B

    def fresh_scores() -> np.ndarray:
        score = state.sq + 2.0 * state.a
        score[state.mask] = np.inf
        return score

    added = 0
    score = fresh_scores()  # sq + 2 a, tracked through the sketch between exact rescorings
    since = 0
    exact_now = True
    while count is None or added < count:
        candidates = _lowest(score, min(pool, n - state.count))
        if candidates.size == 0 or not np.isfinite(score[candidates[0]]):
            break
        if time.perf_counter() > deadline:
            return _fill_at_deadline(state, score, count, added), True
        rows = state.S[candidates]
        exact = state.sq[candidates] + 2.0 * np.asarray(rows @ state.z.astype(rows.dtype), dtype=np.float64)
        best = int(np.argmin(exact))
        if limit_sq is not None and state.zz + exact[best] > limit_sq:
            if exact_now:
                break
            state.rescore()  # the estimate may have missed a sample that fits: check with exact scores
            score, since, exact_now = fresh_scores(), 0, True
            continue
        # z is updated exactly; a only through the sketch, until the next rescoring
        j = int(candidates[best])
        state.mask[j] = True
        state.z += np.asarray(rows[best], dtype=np.float64)
        state.zz = float(state.z @ state.z)
        score += 2.0 * (B @ B[j])
        score[j] = np.inf
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


def _greedy(
    S: np.ndarray,
    sq: np.ndarray,
    *,
    m: int | None,
    limit_sq: float | None,
    deadline: float,
    sketch: _Sketch | None,
) -> tuple[np.ndarray, bool]:
    state = _State(S, sq, np.zeros(S.shape[0], dtype=bool))
    _, timed_out = _greedy_add(state, count=m, limit_sq=limit_sq, deadline=deadline, sketch=sketch)
    return state.mask, timed_out


def _greedy_steps(target: _Target, n: int) -> int:
    """Steps greedy takes: ``m``, or for the epsilon problem a guess of half the samples."""
    return target.m if target.m is not None else n // 2


def _warm_start(
    S: np.ndarray, sq: np.ndarray, target: _Target, *, deadline: float, sketch: _Sketch | None
) -> tuple[np.ndarray, float]:
    """Greedy's answer as a starting point of local search, screened through ``sketch`` only where
    textbook greedy would be too slow. Returns (mask, seconds taken)."""
    started = time.perf_counter()
    n, d = S.shape
    screen = sketch if _needs_sketch(n, d, _greedy_steps(target, n)) else None
    mask, _ = _greedy(S, sq, m=target.m, limit_sq=target.limit_sq, deadline=deadline, sketch=screen)
    return mask, time.perf_counter() - started


def _greedy_solution(
    S: np.ndarray, target: _Target, *, started: float, time_limit: float, rank: int, seed: int
) -> PruningSolution:
    sq = _row_sq_norms(S)
    n, d = S.shape
    sketch = _make_sketch(S, sq, rank, seed) if _needs_sketch(n, d, _greedy_steps(target, n)) else None
    mask, timed_out = _greedy(S, sq, m=target.m, limit_sq=target.limit_sq, deadline=started + time_limit, sketch=sketch)
    name = "greedy" if sketch is None else f"greedy(screened, k={sketch.rank})"
    return _finish(S, mask, target, method=name, status=_heuristic_status(timed_out), started=started, bound=None)


def greedy_cardinality(
    S: np.ndarray, m: int, *, time_limit: float = 600.0, rank: int = 64, seed: int = 0
) -> PruningSolution:
    """Greedy baseline for the cardinality problem: add, one at a time, the sample that keeps
    ``||S^T W||`` smallest, until ``m`` are pruned.

    Textbook greedy (one pass over ``S`` per step) while ``m n d <= 2e10``; beyond, each step scores
    every sample through a rank-``rank`` sketch and takes the exact best of the 64 best estimates."""
    started = time.perf_counter()
    S, target, time_limit = _check_inputs(S, lambda n: _Target(m=_check_m(m, n)), time_limit)
    return _greedy_solution(S, target, started=started, time_limit=time_limit, rank=rank, seed=seed)


def greedy_epsilon(
    S: np.ndarray, epsilon: float, *, time_limit: float = 600.0, rank: int = 64, seed: int = 0
) -> PruningSolution:
    """Greedy baseline for the epsilon problem: add, one at a time, the sample that keeps
    ``||S^T W||`` smallest, while it stays ``<= epsilon`` (see :func:`greedy_cardinality`)."""
    started = time.perf_counter()
    S, target, time_limit = _check_inputs(S, lambda n: _Target(epsilon=_check_epsilon(epsilon)), time_limit)
    solution = _greedy_solution(S, target, started=started, time_limit=time_limit, rank=rank, seed=seed)
    return _warn_if_nothing_pruned(solution, S, stacklevel=3)
