"""The generalisation-guaranteed problem: prune as many samples as fit in ``||S^T W||_2 <= epsilon``.

What sets it apart from the cardinality problem along the common skeleton of
:func:`~lightning_prune.influence.solvers.solve._solve`: SCIP's answer may need a repair (its
feasibility tolerance), and the relaxation path searches for the count (phases A to D of
:func:`~lightning_prune.influence.solvers.solve_epsilon`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from lightning_prune.influence.solvers.greedy import _greedy_add, _greedy_remove, _warm_start
from lightning_prune.influence.solvers.local_search import _local_search_epsilon, _swap_improve
from lightning_prune.influence.solvers.relaxation import _ordered_insertion, _Relaxation, _round_top
from lightning_prune.influence.solvers.result import PruningSolution, _heuristic_status
from lightning_prune.influence.solvers.run import _Run
from lightning_prune.influence.solvers.sketch import _Sketch
from lightning_prune.influence.solvers.state import _State


class _Bisection(NamedTuple):
    """Phase A's outcome: the relaxation, the largest count ``m`` whose relaxed value fits the
    budget, and the relaxed ``w`` at that count."""

    relaxation: _Relaxation
    m: int
    w: np.ndarray


@dataclass(frozen=True)
class _EpsilonProblem:
    """The settings of :func:`~lightning_prune.influence.solvers.solve_epsilon` that only its phases
    read (see its arguments)."""

    rank: int
    seed: int
    threads: int | None
    warm_start_greedy: bool
    max_relaxations: int
    max_probes: int

    def trivial(self, run: _Run) -> PruningSolution | None:
        return None

    def polish_hint(self, run: _Run, greedy: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        hint, _, _ = _local_search_epsilon(run.S, run.sq, greedy, run.target.budget, run.after(0.2), None)
        return hint, {"heuristic_pruned": int(hint.sum())}

    def check_exact(
        self, run: _Run, mask: np.ndarray | None, status: str, details: dict[str, Any]
    ) -> tuple[np.ndarray | None, str]:
        if mask is None or run.norm(mask) <= run.target.budget:
            return mask, status
        # SCIP's feasibility tolerance let a hair-width violation through: repair it.
        state = _State(run.S, run.sq, mask)
        _greedy_remove(state, limit_sq=run.target.budget**2)
        details["repaired_tolerance_violation"] = True
        return state.mask, "feasible"

    def prefer(self, run: _Run, hint: np.ndarray, mask: np.ndarray, status: str) -> tuple[np.ndarray, str]:
        if int(hint.sum()) > int(mask.sum()):  # then SCIP stopped early: its answer is not optimal
            return hint, "feasible"
        return mask, status

    def relaxation_path(self, run: _Run, sketch: _Sketch, details: dict[str, Any]) -> PruningSolution:
        """(A) bisection on the relaxation, (B) the better of ordered insertion and greedy, (C)
        probes between the two counts, (D) add, swap and growth moves."""
        path = f"svd(k={sketch.rank})+pdlp-bisection+ordered-rounding"
        bisection = self._bisect(run, sketch, details) if sketch.s0 > 0.0 else None
        order = np.argsort(run.sq, kind="stable") if bisection is None else np.lexsort((run.sq, -bisection.w))
        best, from_greedy = self._start(run, sketch, order, details)
        if from_greedy:
            path += "+greedy-start"
        best, probed = self._probe(run, sketch, bisection, best, details)
        if probed:
            path += "+probes"
        started = time.perf_counter()
        mask, counts, timed_out = _local_search_epsilon(run.S, run.sq, best, run.target.budget, run.deadline, sketch)
        if int(mask.sum()) < int(best.sum()):
            mask = best
        details.update(local_search_s=time.perf_counter() - started, **{f"local_{key}": v for key, v in counts.items()})
        return run.finish(
            mask, method=path + "+local-search", status=_heuristic_status(timed_out), bound=None, details=details
        )

    def _bisect(self, run: _Run, sketch: _Sketch, details: dict[str, Any]) -> _Bisection:
        """Phase A: f(m) = relaxed min of ||B^T w||^2 + rho . w over sum w = m is convex with
        f(0) = 0, so nondecreasing: bisect for the largest m with f(m) <= epsilon^2."""
        relaxation = _Relaxation.of(sketch, self.threads)
        n = run.n
        target = run.target.budget**2 / sketch.s0**2
        started = time.perf_counter()
        lo, hi, w_relaxed = 0, n, np.zeros(n)
        everything = np.ones(n)
        if float(np.sum((relaxation.A.T @ everything) ** 2) + relaxation.rho.sum()) <= target:
            lo, w_relaxed = n, everything
        solves = 0
        per_solve = max(0.5, 0.25 * run.time_limit / max(1, self.max_relaxations))
        while hi - lo > max(1, n // 1000) and solves < self.max_relaxations:
            mid = (lo + hi) // 2
            relaxed = relaxation.solve(mid, time_limit=per_solve, initial=w_relaxed)
            solves += 1
            if relaxed.primal <= target:
                lo, w_relaxed = mid, relaxed.w
            else:
                hi = mid
        details.update(pdlp_s=time.perf_counter() - started, pdlp_solves=solves, relaxed_count=lo)
        return _Bisection(relaxation, lo, w_relaxed)

    def _start(self, run: _Run, sketch: _Sketch, order: np.ndarray, details: dict[str, Any]) -> tuple[np.ndarray, bool]:
        """Phase B: feasible starting points: ordered insertion of the relaxed solution, and greedy.
        Returns the one with more samples and whether that is greedy's."""
        best = _ordered_insertion(run.S, run.sq, order, run.target.budget**2)
        name = "rounded"
        details["rounded_pruned"] = int(best.sum())
        if self.warm_start_greedy:
            greedy, seconds = _warm_start(run.S, run.sq, run.target, deadline=run.deadline, sketch=sketch)
            details.update(greedy_s=seconds, greedy_pruned=int(greedy.sum()))
            if int(greedy.sum()) > int(best.sum()):
                name, best = "greedy", greedy
        details["start"] = name
        return best, name == "greedy"

    def _probe(
        self, run: _Run, sketch: _Sketch, bisection: _Bisection | None, best: np.ndarray, details: dict[str, Any]
    ) -> tuple[np.ndarray, bool]:
        """Phase C: probes between the best feasible count and the relaxed count: round the relaxed
        solution at the midpoint and swap until the norm fits (accepted) or a local optimum
        (rejected). Returns the best feasible mask and whether a probe was accepted."""
        started = time.perf_counter()
        limit_sq = run.target.budget**2
        lo, hi = int(best.sum()), (run.n if bisection is None else bisection.m)
        probes = accepted = 0
        while (
            bisection is not None
            and hi - lo > max(1, run.n // 1000)
            and probes < self.max_probes
            and time.perf_counter() < run.deadline
        ):
            mid = (lo + hi + 1) // 2
            state = self._probe_at(run, sketch, bisection, mid, probes_left=self.max_probes - probes)
            probes += 1
            if state.zz <= limit_sq:
                _greedy_add(state, count=None, limit_sq=limit_sq, deadline=run.deadline, sketch=sketch)
                best, lo, accepted = state.mask.copy(), state.count, accepted + 1
            else:
                hi = mid - 1
        details.update(
            probe_s=time.perf_counter() - started,
            probes=probes,
            probes_accepted=accepted,
            probed_pruned=int(best.sum()),
        )
        return best, accepted > 0

    def _probe_at(self, run: _Run, sketch: _Sketch, bisection: _Bisection, count: int, probes_left: int) -> _State:
        """Round the relaxation at ``count`` and swap, within a share of the time left, until the
        norm fits the budget."""
        w = bisection.relaxation.solve(count, time_limit=max(0.5, 0.1 * run.time_limit), initial=bisection.w).w
        share = max(1.0, 0.5 * (run.deadline - time.perf_counter()) / max(1, probes_left))
        state = _State(run.S, run.sq, _round_top(w, count, run.sq))
        _swap_improve(state, deadline=time.perf_counter() + share, sketch=sketch, target_sq=run.target.budget**2)
        return state
