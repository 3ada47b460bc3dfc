"""The report of a run: a table in the terminal, ``report.json`` and PNG plots.

It reads plain data (:class:`RunResults`), not the runner, so that it can be rebuilt from the
files of a finished run and tested without training anything.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_prune.pipeline.names import FULL, RANDOM, ratio_label
from lightning_prune.selection.files import write_text_atomic

REACHED_NOTE_TOLERANCE = 0.005
"""A method whose mean reached pruning ratio is further than this from its target gets a note under the table."""

Summary = dict[str, dict[str, dict[str, Any]]]


@dataclass
class RunResults:
    """What a report is made of.

    Attributes:
        run_dir: where ``report.json`` and ``plots/`` go.
        description: what defines the run (data, model, epochs...), copied into ``report.json``.
        methods: the methods' report keys, in the run's order.
        prune_ratios: every ratio of the run (the table's columns).
        seeds: the coreset-training seeds.
        cells: one result per finished training (``method``, ``prune_ratio``, ``seed``, ``test_acc``...).
        scores: each score-based method's per-sample scores, for the histograms.
        upfront_costs: per method and ratio label, what its selection cost before the coreset training
            (``{"samples_forwarded", "seconds"}``; ``None`` where not recorded).
    """

    run_dir: Path
    description: dict[str, Any]
    methods: list[str]
    prune_ratios: list[float]
    seeds: list[int]
    cells: list[dict[str, Any]]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    upfront_costs: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)


def summarise(results: list[dict[str, Any]]) -> Summary:
    """``{method: {ratio: {"mean", "std", "runs", "prune_ratio_reached"}}}`` of test accuracy over seeds.

    ``std`` is the population standard deviation over seeds (0 for one seed); ``prune_ratio_reached``
    is the mean fraction actually removed (a learned selection may end away from its target); for a
    ``dynamic`` method (InfoBatch) it is the fraction of sample presentations its training skipped.
    """
    grouped: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        grouped[result["method"]][float(result["prune_ratio"])].append(result)
    summary: Summary = {}
    for method, by_ratio in grouped.items():
        summary[method] = {}
        for ratio, cells in sorted(by_ratio.items()):
            accs = [cell["test_acc"] for cell in cells]
            summary[method][ratio_label(ratio)] = {
                "mean": statistics.fmean(accs),
                "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                "runs": accs,
                "prune_ratio_reached": statistics.fmean(
                    float(cell.get("prune_ratio_reached", ratio)) for cell in cells
                ),
                "dynamic": any(cell.get("dynamic", False) for cell in cells),
            }
    return summary


def total_costs(results: RunResults) -> dict[str, dict[str, dict[str, float] | None]]:
    """``{method: {ratio: {"samples_forwarded", "seconds", "relative"}}}``: each method's total cost, its
    selection's (the scoring run for score-based methods, the mask training for AdaPruner) plus the
    mean coreset training over seeds; ``relative`` to the mean full-data training. ``None`` where a
    part was not recorded (a run made before costs were)."""
    trainings: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for cell in results.cells:
        trainings[cell["method"]][ratio_label(float(cell["prune_ratio"]))].append(cell)

    def mean_training(cells: list[dict[str, Any]]) -> dict[str, float] | None:
        if not cells or any("train_samples_forwarded" not in cell for cell in cells):
            return None
        return {
            "samples_forwarded": statistics.fmean(cell["train_samples_forwarded"] for cell in cells),
            "seconds": statistics.fmean(cell["train_seconds"] for cell in cells),
        }

    full = mean_training(next(iter(trainings.get(FULL, {}).values()), []))
    totals: dict[str, dict[str, dict[str, float] | None]] = {}
    for method, by_ratio in trainings.items():
        totals[method] = {}
        for label, cells in by_ratio.items():
            training = mean_training(cells)
            upfront = results.upfront_costs.get(method, {}).get(label, {"samples_forwarded": 0, "seconds": 0.0})
            if training is None or upfront is None:
                totals[method][label] = None
                continue
            samples = training["samples_forwarded"] + upfront["samples_forwarded"]
            relative = samples / full["samples_forwarded"] if full and full["samples_forwarded"] else float("nan")
            seconds = training["seconds"] + upfront["seconds"]
            totals[method][label] = {"samples_forwarded": samples, "seconds": seconds, "relative": relative}
    return totals


def format_cost_table(costs: dict[str, dict[str, dict[str, float] | None]], ratios: list[float]) -> str:
    """Total cost (scoring or mask training + coreset training) per method and ratio, x one full-data training."""
    header = ["method"] + [f"prune {r:.0%}" for r in ratios]
    rows = []
    for method, by_label in costs.items():
        if method == FULL:
            continue
        cells = []
        for ratio in ratios:
            label = ratio_label(ratio)
            entry = by_label.get(label)
            cells.append("-" if label not in by_label else "unknown" if entry is None else f"{entry['relative']:.2f}x")
        rows.append([method, *cells])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_accuracy(entry: dict[str, Any]) -> str:
    """``"98.52 ± 0.90"`` over several seeds; the value alone for one seed (it has no spread)."""
    mean = f"{100 * entry['mean']:.2f}"
    return f"{mean} ± {100 * entry['std']:.2f}" if len(entry["runs"]) > 1 else mean


def format_table(summary: Summary, ratios: list[float]) -> str:
    """Test accuracy (in %; mean ± std over seeds where there are several) per method and pruning ratio."""
    header = ["method"] + [f"prune {r:.0%}" for r in ratios]
    rows = []
    if FULL in summary:
        full = next(iter(summary[FULL].values()))
        rows.append([f"{FULL} data"] + [format_accuracy(full)] * len(ratios))
    for method in [m for m in summary if m != FULL]:
        entries = [summary[method].get(ratio_label(ratio)) for ratio in ratios]
        rows.append([method] + [format_accuracy(entry) if entry else "-" for entry in entries])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            str(cell).rjust(width) if i else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines + reached_notes(summary))


def reached_notes(summary: Summary) -> list[str]:
    """One line per (method, ratio) whose selections removed another fraction than the target."""
    notes = []
    for method, by_ratio in summary.items():
        for label, entry in by_ratio.items():
            reached = entry["prune_ratio_reached"]
            if method != FULL and entry.get("dynamic"):
                notes.append(
                    f"  note: {method} (dynamic) at prune {float(label):.0%} skipped {reached:.1%} of the sample "
                    "presentations (the ratio is its skip probability among well-learned samples)"
                )
            elif method != FULL and abs(reached - float(label)) > REACHED_NOTE_TOLERANCE:
                notes.append(f"  note: {method} at prune {float(label):.0%} removed {reached:.1%} of the samples")
    return notes


def _plot_accuracy(summary: Summary, path: Path, title: str, num_seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.0, 4.4))
    for method, by_ratio in summary.items():
        if method == FULL:
            full = next(iter(by_ratio.values()))
            axis.axhline(100 * full["mean"], color="black", linestyle=":", label="full data")
            continue
        ratios = [100 * float(r) for r in by_ratio]
        means = np.array([100 * v["mean"] for v in by_ratio.values()])
        stds = np.array([100 * v["std"] for v in by_ratio.values()])
        style: dict[str, Any] = {"linestyle": "--", "color": "gray"} if method == RANDOM else {"marker": "o"}
        axis.errorbar(ratios, means, yerr=stds if num_seeds > 1 else None, capsize=3, label=method, **style)
    axis.set_xlabel("pruning ratio (% of training samples removed)")
    axis.set_ylabel("test accuracy (%)")
    spread = f"mean ± 1 std over {num_seeds} seeds" if num_seeds > 1 else "one seed"
    axis.set_title(f"{title}\n({spread})", fontsize=10)
    axis.grid(alpha=0.3)
    # outside the axes: a legend inside covers the curves at the ratios where they differ most
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_accuracy_vs_cost(summary: Summary, costs: dict[str, dict[str, dict[str, float] | None]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.0, 4.4))
    for method, by_ratio in summary.items():
        points = [
            (costs[method][label]["relative"], 100 * entry["mean"])  # type: ignore[index]
            for label, entry in by_ratio.items()
            if costs.get(method, {}).get(label) is not None
        ]
        if not points:
            continue
        xs, ys = zip(*sorted(points), strict=True)
        style: dict[str, Any] = {"linestyle": "--", "color": "gray"} if method == RANDOM else {"marker": "o"}
        if method == FULL:
            style = {"marker": "*", "color": "black", "markersize": 10, "linestyle": "none"}
        axis.plot(xs, ys, label="full data" if method == FULL else method, **style)
    axis.set_xlabel("total cost (samples forwarded, x one full-data training; scoring included)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("accuracy against total cost (mean over seeds)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def histogram_bins(values: np.ndarray, max_bins: int = 50) -> Any:
    """50 equal bins, or one bin per integer for integer-valued scores (forgetting counts) with few values."""
    finite = values[np.isfinite(values)]
    if finite.size and np.all(finite == np.round(finite)):
        low, high = int(finite.min()), int(finite.max())
        if high - low < max_bins:
            return np.arange(low - 0.5, high + 1.5)
    return max_bins


def _plot_histograms(scores: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(scores))
    rows = -(-len(scores) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, (method, values) in zip(axes.flat, scores.items(), strict=False):
        axis.hist(values, bins=histogram_bins(values), color="tab:blue")
        axis.set_title(method)
        axis.set_xlabel("score (higher = keep)")
        axis.set_ylabel("samples")
    for axis in list(axes.flat)[len(scores) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(results: RunResults, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``report.json`` and the plots into the run directory, print the table; return the report."""
    summary = summarise(results.cells)
    costs = total_costs(results)
    report = {
        "run_dir": str(results.run_dir),
        "description": results.description,
        "methods": results.methods,
        "prune_ratios": results.prune_ratios,
        "seeds": results.seeds,
        "test_accuracy": summary,
        "total_cost": costs,
        "cells": results.cells,
    }
    write_text_atomic(results.run_dir / "report.json", json.dumps(report, indent=2, default=str))
    plots = results.run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    title = f"{results.run_dir.name}: coreset accuracy"
    _plot_accuracy(summary, plots / "accuracy_vs_prune_ratio.png", title, len(results.seeds))
    _plot_accuracy_vs_cost(summary, costs, plots / "accuracy_vs_cost.png")
    if results.scores:
        _plot_histograms(results.scores, plots / "score_histograms.png")
    spread = "mean ± std over seeds " if len(results.seeds) > 1 else "seed "
    log(
        f"\nTest accuracy (%, {spread}"
        + ", ".join(map(str, results.seeds))
        + "):\n"
        + format_table(summary, results.prune_ratios)
    )
    log(
        "\nTotal cost (samples forwarded: scoring or mask training + coreset training, x one full-data training):\n"
        + format_cost_table(costs, results.prune_ratios)
    )
    log(f"\nReport: {results.run_dir / 'report.json'}; plots: {plots}")
    return report
