"""The report of a run: a table in the terminal, ``report.json`` and PNG plots."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from lightning_prune.pipeline.runner import FULL, RANDOM, ratio_label, scores_for_report
from lightning_prune.selection.files import write_text_atomic

if TYPE_CHECKING:
    from lightning_prune.pipeline.runner import PruningRun


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {ratio: {"mean", "std", "runs"}}}`` of test accuracy over seeds."""
    grouped: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        grouped[result["method"]][float(result["prune_ratio"])].append(result["test_acc"])
    return {
        method: {
            ratio_label(ratio): {
                "mean": statistics.fmean(accs),
                "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                "runs": accs,
            }
            for ratio, accs in sorted(by_ratio.items())
        }
        for method, by_ratio in grouped.items()
    }


def format_table(summary: dict[str, dict[str, dict[str, Any]]], ratios: list[float]) -> str:
    """Test accuracy (mean ± std over seeds, in %) per method and pruning ratio."""
    header = ["method"] + [f"prune {r:.0%}" for r in ratios]
    rows = []
    if FULL in summary:
        full = next(iter(summary[FULL].values()))
        rows.append([f"{FULL} data"] + [f"{100 * full['mean']:.2f} ± {100 * full['std']:.2f}"] * len(ratios))
    for method in [m for m in summary if m != FULL]:
        cells = []
        for ratio in ratios:
            entry = summary[method].get(ratio_label(ratio))
            cells.append(f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}" if entry else "-")
        rows.append([method] + cells)
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(width) if i else str(cell).ljust(width) for i, (cell, width) in
                       enumerate(zip(row, widths))) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _plot_accuracy(summary: dict[str, dict[str, dict[str, Any]]], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for method, by_ratio in summary.items():
        if method == FULL:
            full = next(iter(by_ratio.values()))
            axis.axhline(100 * full["mean"], color="black", linestyle=":", label="full data")
            continue
        ratios = [float(r) for r in by_ratio]
        means = np.array([100 * v["mean"] for v in by_ratio.values()])
        stds = np.array([100 * v["std"] for v in by_ratio.values()])
        style = {"linestyle": "--", "color": "gray"} if method == RANDOM else {"marker": "o"}
        axis.errorbar([100 * r for r in ratios], means, yerr=stds, capsize=3, label=method, **style)
    axis.set_xlabel("pruning ratio (% of training samples removed)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_histograms(scores: dict[str, np.ndarray], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(scores))
    rows = -(-len(scores) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, (method, values) in zip(axes.flat, scores.items()):
        axis.hist(values, bins=50, color="tab:blue")
        axis.set_title(method)
        axis.set_xlabel("score (higher = keep)")
        axis.set_ylabel("samples")
    for axis in list(axes.flat)[len(scores):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(run: "PruningRun", log: Callable[[str], None] = print) -> dict[str, Any]:
    summary = summarise(run.results())
    report = {
        "run_dir": str(run.run_dir),
        "description": run.description,
        "methods": [spec.key for spec in run.methods],
        "prune_ratios": run.all_ratios,
        "seeds": run.seeds,
        "test_accuracy": summary,
        "cells": run.results(),
    }
    write_text_atomic(run.run_dir / "report.json", json.dumps(report, indent=2, default=str))
    plots = run.run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    _plot_accuracy(summary, plots / "accuracy_vs_prune_ratio.png", title=f"{run.run_dir.name}: coreset accuracy")
    scores = scores_for_report(run)
    if scores:
        _plot_histograms(scores, plots / "score_histograms.png")
    table = format_table(summary, run.all_ratios)
    log("\nTest accuracy (%, mean ± std over seeds " + ", ".join(map(str, run.seeds)) + "):\n" + table)
    log(f"\nReport: {run.run_dir / 'report.json'}; plots: {plots}")
    return report
