"""One solve under way: its checked inputs, what it is asked for and its clock.

The phases of both problems (exact, relaxation, rounding, local search) need the same handful of
things; passing them as one object keeps their signatures short and the deadlines consistent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_prune.influence.solvers.common import _norm, _Target
from lightning_prune.influence.solvers.result import PruningSolution, _finish


@dataclass(frozen=True)
class _Run:
    """``S`` (checked), its squared row norms ``sq``, the target, the start time and time limit of
    the whole solve, and whether the exact solver may print its log."""

    S: np.ndarray
    sq: np.ndarray
    target: _Target
    started: float
    time_limit: float
    verbose: bool

    @property
    def n(self) -> int:
        return int(self.S.shape[0])

    @property
    def deadline(self) -> float:
        return self.started + self.time_limit

    def after(self, fraction: float) -> float:
        """The moment ``fraction`` of the time limit after the start (a phase's own deadline)."""
        return self.started + fraction * self.time_limit

    def norm(self, mask: np.ndarray) -> float:
        """``||S^T W||_2`` of a pruning mask, in float64."""
        return _norm(self.S, mask)

    def finish(
        self,
        mask: np.ndarray,
        *,
        method: str,
        status: str,
        bound: float | None,
        details: dict[str, Any] | None = None,
    ) -> PruningSolution:
        return _finish(
            self.S, mask, self.target, method=method, status=status, started=self.started, bound=bound, details=details
        )
