"""Local search on the full ``S``: swap moves, and for the epsilon problem add and growth moves.

Rounding a relaxation, or greedy, leaves a pruned set that single swaps (one pruned sample for one
kept one) can still improve a lot; this is where the scalable path gets most of its quality. Moves
are scored exactly through :class:`~lightning_prune.influence.solvers.state._State`, the sketch only
screens which pairs are worth scoring.
"""

from __future__ import annotations

import time

import numpy as np

from lightning_prune.influence.solvers.common import _lowest
from lightning_prune.influence.solvers.greedy import _greedy_add, _greedy_remove
from lightning_prune.influence.solvers.sketch import _Sketch
from lightning_prune.influence.solvers.state import _State


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


def _individual_candidates(state: _State, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` pruned samples whose removal alone helps most and the ``size`` kept samples
    whose addition alone hurts least."""
    k = state.count
    remove_gain = state.sq - 2.0 * state.a
    remove_gain[~state.mask] = np.inf
    add_cost = state.sq + 2.0 * state.a
    add_cost[state.mask] = np.inf
    return _lowest(remove_gain, min(size, k)), _lowest(add_cost, min(size, state.mask.size - k))


def _swap_round(state: _State, cand_in: np.ndarray, cand_out: np.ndarray, inner: int, rtol: float) -> int:
    """Best-pair swaps among pruned candidates ``cand_in`` and kept candidates ``cand_out``, exact
    through their Gram matrix, up to ``inner`` in sequence; applied to ``state``. Returns the swaps
    made."""
    C = np.concatenate([cand_in, cand_out])
    G = state.gram(C)
    sqC = state.sq[C]
    aC = state.a[C].copy()
    inside = np.zeros(C.size, dtype=bool)
    inside[: cand_in.size] = True
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


def _swap_stages(sketch: _Sketch | None, block: int, max_block: int) -> list[int | _Sketch]:
    """Where :func:`_swap_improve` looks for candidates, in order: a block size (individually best
    samples) or the sketch (pair screening)."""
    stages: list[int | _Sketch] = [block]
    if sketch is not None:
        stages.append(sketch)
    size = block
    while size <= max_block:
        stages.append(size)
        size *= 2
    return stages


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
    stages = _swap_stages(sketch, block, max_block)
    swaps = stage = 0
    while stage < len(stages):
        if time.perf_counter() > deadline:
            return swaps, True
        k = state.count
        if k == 0 or k == n or (target_sq is not None and state.zz <= target_sq):
            return swaps, False
        source = stages[stage]
        if isinstance(source, _Sketch):
            cand_in, cand_out = _pair_candidates(state, source, pairs)
        else:
            cand_in, cand_out = _individual_candidates(state, source)
        before = state.zz
        made = _swap_round(state, cand_in, cand_out, inner, rtol)
        if made and state.zz < before:
            swaps += made
            stage = 0  # any real progress changes every score: start again from the cheap stage
            continue
        if made:  # rounding noise, no real progress
            state.refresh()
        stage += 1
    return swaps, False


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
    limit_sq = epsilon**2
    state = _State(S, sq, mask)
    counts = {"added": 0, "swaps": 0, "grown": 0, "probes": 0}
    timed_out = _add_and_swap(state, limit_sq, deadline, sketch, counts)
    if grow and not timed_out:
        state, timed_out = _growth_probes(state, limit_sq, deadline, sketch, counts)
    state.refresh()
    _greedy_remove(state, limit_sq=limit_sq)  # only acts on a rounding-level overshoot
    return state.mask, counts, timed_out


def _add_and_swap(
    state: _State, limit_sq: float, deadline: float, sketch: _Sketch | None, counts: dict[str, int]
) -> bool:
    """Greedy additions and swaps in turn, until neither helps; returns whether time ran out."""
    while True:
        added, timed_out = _greedy_add(state, count=None, limit_sq=limit_sq, deadline=deadline, sketch=sketch)
        counts["added"] += added
        if timed_out:
            return True
        swaps, timed_out = _swap_improve(state, deadline=deadline, sketch=sketch)
        counts["swaps"] += swaps
        if timed_out or swaps == 0:  # no swap lowered ||z||, so no further addition fits
            return timed_out


def _growth_probes(
    state: _State, limit_sq: float, deadline: float, sketch: _Sketch | None, counts: dict[str, int]
) -> tuple[_State, bool]:
    """Add ``step`` samples regardless of the budget, then swap until the norm fits again: this
    escapes the local optimum of :func:`_add_and_swap`, where no single addition fits. Returns the
    (possibly larger) state and whether time ran out."""
    n = state.mask.size
    timed_out = False
    step = max(1, state.count // 50)
    while not timed_out and step >= 1 and state.count < n:
        counts["probes"] += 1
        trial = _State(state.S, state.sq, state.mask)
        _, timed_out = _greedy_add(
            trial, count=min(step, n - trial.count), limit_sq=None, deadline=deadline, sketch=sketch
        )
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
    return state, timed_out
