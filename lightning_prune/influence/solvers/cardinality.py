"""The cardinality-guaranteed problem: prune ``m`` samples with the smallest ``||S^T W||_2``.

What sets it apart from the epsilon problem along the common skeleton of
:func:`~lightning_prune.influence.solvers.solve._solve`: how SCIP's answer is checked, and a
relaxation path of one PDLP solve, several roundings and local search from each start.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_prune.influence.solvers.greedy import _warm_start
from lightning_prune.influence.solvers.local_search import _local_search_cardinality
from lightning_prune.influence.solvers.relaxation import _random_roundings, _Relaxation, _round_top
from lightning_prune.influence.solvers.result import PruningSolution, _heuristic_status
from lightning_prune.influence.solvers.run import _Run
from lightning_prune.influence.solvers.sketch import _Sketch


@dataclass(frozen=True)
class _CardinalityProblem:
    """The settings of :func:`~lightning_prune.influence.solvers.solve_cardinality` that only its
    phases read (see its arguments)."""

    rank: int
    seed: int
    threads: int | None
    warm_start_greedy: bool
    compute_bound: bool
    rounding_trials: int

    def trivial(self, run: _Run) -> PruningSolution | None:
        m = run.target.count
        if m not in (0, run.n):
            return None
        mask = np.full(run.n, m == run.n)
        return run.finish(mask, method="trivial", status="optimal", bound=run.norm(mask))

    def polish_hint(self, run: _Run, greedy: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        hint, _, _ = _local_search_cardinality(run.S, run.sq, greedy, run.after(0.2), None)
        return hint, {"heuristic_objective": run.norm(hint)}

    def check_exact(
        self, run: _Run, mask: np.ndarray | None, status: str, details: dict[str, Any]
    ) -> tuple[np.ndarray | None, str]:
        """SCIP's answer, or ``None`` where it has none with exactly ``m`` samples."""
        if mask is None or int(mask.sum()) != run.target.count:
            return None, status
        return mask, status

    def prefer(self, run: _Run, hint: np.ndarray, mask: np.ndarray, status: str) -> tuple[np.ndarray, str]:
        # The status stays: a hint ahead of a proved optimum is ahead by rounding noise only.
        return (hint if run.norm(hint) < run.norm(mask) else mask), status

    def relaxation_path(self, run: _Run, sketch: _Sketch, details: dict[str, Any]) -> PruningSolution:
        """PDLP relaxation -> roundings (and greedy) -> local search from each start."""
        m = run.target.count
        if sketch.s0 == 0.0:
            return run.finish(
                _round_top(np.zeros(run.n), m, run.sq), method="trivial(S=0)", status="optimal", bound=0.0
            )
        relaxation = _Relaxation.of(sketch, self.threads)
        w = self._relax(run, relaxation, details)
        bound = self._bound(run, relaxation, w, details) if self.compute_bound else None
        starts = self._starts(run, sketch, w, details)
        mask, start, timed_out = self._improve(run, sketch, starts, details)
        path = f"svd(k={sketch.rank})+pdlp+round" + ("+greedy-start" if start == "greedy" else "")
        return run.finish(
            mask, method=path + "+local-search", status=_heuristic_status(timed_out), bound=bound, details=details
        )

    def _relax(self, run: _Run, relaxation: _Relaxation, details: dict[str, Any]) -> np.ndarray:
        started = time.perf_counter()
        relaxed = relaxation.solve(run.target.count, time_limit=max(1.0, 0.25 * run.time_limit))
        details.update(
            pdlp_s=time.perf_counter() - started,
            pdlp_termination=relaxed.reason,
            pdlp_iterations=relaxed.iterations,
            relaxed_objective=math.sqrt(max(relaxed.primal, 0.0)) * relaxation.s0,
        )
        return relaxed.w

    def _bound(self, run: _Run, relaxation: _Relaxation, w: np.ndarray, details: dict[str, Any]) -> float | None:
        started = time.perf_counter()
        bound, reason = relaxation.lower_bound(run.target.count, time_limit=max(1.0, 0.1 * run.time_limit), initial=w)
        details.update(bound_s=time.perf_counter() - started, bound_termination=reason)
        return bound

    def _starts(self, run: _Run, sketch: _Sketch, w: np.ndarray, details: dict[str, Any]) -> dict[str, np.ndarray]:
        """The best of the roundings, and greedy's answer when asked for."""
        m = run.target.count
        candidates = {"round-top": _round_top(w, m, run.sq), **_random_roundings(w, m, self.rounding_trials, self.seed)}
        norms = {name: run.norm(mask) for name, mask in candidates.items()}
        name = min(norms, key=norms.__getitem__)
        details["rounded_objective"] = norms[name]
        starts = {name: candidates[name]}
        if self.warm_start_greedy:
            greedy, seconds = _warm_start(run.S, run.sq, run.target, deadline=run.deadline, sketch=sketch)
            details.update(greedy_s=seconds, greedy_objective=run.norm(greedy))
            starts["greedy"] = greedy
        return starts

    def _improve(
        self, run: _Run, sketch: _Sketch, starts: dict[str, np.ndarray], details: dict[str, Any]
    ) -> tuple[np.ndarray, str, bool]:
        """Local search from each start in an equal share of the time left; returns the best mask,
        the start it came from and whether any search was cut short."""
        started = time.perf_counter()
        results: dict[str, tuple[float, np.ndarray]] = {}
        swaps: dict[str, int] = {}
        timed_out = False
        for position, (label, begin) in enumerate(starts.items()):
            share = (run.deadline - time.perf_counter()) / (len(starts) - position)
            improved, swaps[label], cut = _local_search_cardinality(
                run.S, run.sq, begin, time.perf_counter() + share, sketch
            )
            timed_out = timed_out or cut
            results[label] = min((run.norm(improved), improved), (run.norm(begin), begin), key=lambda pair: pair[0])
            details[f"local_search_objective_from_{label}"] = results[label][0]
        best = min(results, key=lambda label: results[label][0])
        details.update(start=best, local_search_s=time.perf_counter() - started, swaps=swaps[best])
        return results[best][1], best, timed_out
