"""The equal-cost frontier: the best accuracy a baseline reaches for a given total cost.

A pruning method is worth its cost only where it beats what the same compute buys without it: the
full data trained for fewer samples (``full-budget``), a fresh random subset each epoch (``rs2``), or
a static random subset. Each baseline run is a point ``(total cost, accuracy)``, costs relative to
one full-data training. The frontier is their upper envelope:

* the **Pareto points**: the baselines that no other baseline matches in accuracy at a cost no
  higher (sorted by cost, so accuracy rises along them);
* between two Pareto points the frontier is the straight line joining them (an interpolation: no
  baseline was measured there; reports say so). It is never below the better of the cheaper
  points, so a method is judged against at least what a measured baseline reached for less;
* above the most expensive Pareto point it stays at that point's accuracy (more compute can always
  be spent on the same run); below the cheapest one it is unknown.

From it: a method's **difference in points** to the frontier at its own total cost, and, for a
static method whose one-off scoring and selection cost ``S`` buys a coreset trained at ``T`` per
use, the **number of uses** after which its cost per use ``T + S / n`` falls below what the frontier
needs for the same accuracy (or never, when the frontier reaches that accuracy for ``T`` or less,
or for less than :data:`COST_RESOLUTION` more: a saving per use that small is below what the
baselines' measured costs resolve, and would print as millions of uses).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lightning_prune.pipeline.names import FULL, FULL_BUDGET, RANDOM, RS2

Costs = Mapping[str, Mapping[str, Mapping[str, float] | None]]
"""``{method: {ratio label: {"relative", "upfront", ...} or None}}``, as the report's total costs."""


COST_RESOLUTION = 0.01
"""The smallest saving per use (x one full-data training) a break-even counts: costs are samples
forwarded, and baselines of one run differ from their nominal ratio by up to a batch per epoch."""


@dataclass(frozen=True)
class FrontierPoint:
    """One baseline run: its total cost (x one full-data training), accuracy, and what it was."""

    cost: float
    accuracy: float
    label: str


@dataclass(frozen=True)
class Frontier:
    """The upper envelope of baseline points (see the module docs). Build it with :meth:`of`."""

    points: tuple[FrontierPoint, ...]

    @classmethod
    def of(cls, baselines: Iterable[FrontierPoint]) -> Frontier:
        """The frontier of ``baselines``: their Pareto points in order of cost."""
        candidates = sorted(baselines, key=lambda p: (p.cost, -p.accuracy))
        for point in candidates:
            if not (math.isfinite(point.cost) and math.isfinite(point.accuracy)) or point.cost < 0:
                raise ValueError(f"Baseline {point.label!r} has cost {point.cost} and accuracy {point.accuracy}.")
        if not candidates:
            raise ValueError("The frontier needs at least one baseline point (full-budget, rs2 or random).")
        pareto: list[FrontierPoint] = []
        for point in candidates:
            if not pareto or point.accuracy > pareto[-1].accuracy:
                if pareto and point.cost == pareto[-1].cost:
                    pareto[-1] = point
                else:
                    pareto.append(point)
        return cls(tuple(pareto))

    @property
    def cheapest(self) -> FrontierPoint:
        return self.points[0]

    def accuracy_at(self, cost: float) -> float | None:
        """The frontier's accuracy at ``cost``; ``None`` below the cheapest baseline measured."""
        if cost < self.points[0].cost:
            return None
        for low, high in zip(self.points, self.points[1:], strict=False):
            if cost < high.cost:
                share = (cost - low.cost) / (high.cost - low.cost)
                return low.accuracy + share * (high.accuracy - low.accuracy)
        return self.points[-1].accuracy

    def cost_for(self, accuracy: float) -> float | None:
        """The lowest cost at which the frontier reaches ``accuracy``; ``None`` when it never does.

        An accuracy below the cheapest baseline's gives that baseline's cost (an upper bound: nothing
        cheaper was measured)."""
        if accuracy <= self.points[0].accuracy:
            return self.points[0].cost
        for low, high in zip(self.points, self.points[1:], strict=False):
            if accuracy <= high.accuracy:
                share = (accuracy - low.accuracy) / (high.accuracy - low.accuracy)
                return low.cost + share * (high.cost - low.cost)
        return None

    def difference(self, cost: float, accuracy: float) -> float | None:
        """``accuracy`` minus the frontier's accuracy at ``cost`` (positive: above the frontier)."""
        reference = self.accuracy_at(cost)
        return None if reference is None else accuracy - reference

    def reuse_break_even(self, accuracy: float, one_off_cost: float, cost_per_use: float) -> int | None:
        """The number of uses after which ``cost_per_use + one_off_cost / uses`` falls below the
        frontier's cost for ``accuracy``: 1 when the frontier never reaches it, ``None`` (never) when the
        frontier reaches it for ``cost_per_use`` or less, or for less than :data:`COST_RESOLUTION` more."""
        needed = self.cost_for(accuracy)
        if needed is None:
            return 1
        margin = needed - cost_per_use
        if margin < COST_RESOLUTION:
            return None
        return max(1, math.floor(one_off_cost / margin) + 1)


FRONTIER_BASELINES = (FULL, RANDOM, FULL_BUDGET, RS2)
"""The rows of a run whose points make the frontier (see :mod:`lightning_prune.pipeline.names`)."""


def run_frontier(summary: Mapping[str, Mapping[str, Mapping[str, Any]]], costs: Costs) -> Frontier | None:
    """The frontier of a run's baseline rows (mean test accuracy in points at their total cost)."""
    points = [
        FrontierPoint(entry["relative"], 100 * summary[method][label]["mean"], f"{method} {label}")
        for method in FRONTIER_BASELINES
        for label, entry in costs.get(method, {}).items()
        if entry is not None and label in summary.get(method, {}) and math.isfinite(entry["relative"])
    ]
    return Frontier.of(points) if points else None


def frontier_report(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]], costs: Costs, *, reuse_break_even: bool = True
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and ratio (baselines left out): ``cost`` and ``accuracy`` (points), ``difference`` to the
    frontier at that cost (``None`` below its cheapest point) and, for static methods with a one-off cost
    (``upfront``) where ``reuse_break_even`` holds (a protocol whose coresets train for less than the full
    data), ``reuse_break_even`` (uses after which the coreset pays; ``None``: never)."""
    frontier = run_frontier(summary, costs)
    if frontier is None:
        return {}
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for method, by_label in costs.items():
        if method in FRONTIER_BASELINES:
            continue
        for label, entry in by_label.items():
            if entry is None or label not in summary.get(method, {}):
                continue
            accuracy = 100 * summary[method][label]["mean"]
            row: dict[str, Any] = {
                "cost": entry["relative"],
                "accuracy": accuracy,
                "difference": frontier.difference(entry["relative"], accuracy),
            }
            if reuse_break_even and not summary[method][label].get("dynamic") and "upfront" in entry:
                per_use = entry["relative"] - entry["upfront"]
                row["reuse_break_even"] = frontier.reuse_break_even(accuracy, entry["upfront"], per_use)
            rows.setdefault(method, {})[label] = row
    return rows


def best_at_budgets(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]], costs: Costs, budgets: Iterable[float]
) -> list[tuple[float, str, str, float, float]]:
    """For each budget (x one full-data training), the most accurate row of the run costing no more:
    ``(budget, method, ratio label, accuracy in points, its cost)``; budgets nothing fits are left out."""
    rows = [
        (entry["relative"], 100 * summary[method][label]["mean"], method, label)
        for method, by_label in costs.items()
        for label, entry in by_label.items()
        if entry is not None and label in summary.get(method, {}) and math.isfinite(entry["relative"])
    ]
    best = []
    for budget in budgets:
        fitting = [row for row in rows if row[0] <= budget + 1e-9]
        if fitting:
            cost, accuracy, method, label = max(fitting, key=lambda row: (row[1], -row[0]))
            best.append((budget, method, label, accuracy, cost))
    return best
