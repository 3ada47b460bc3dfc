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

from lightning_prune.dynamic.target import TARGET_TOLERANCE
from lightning_prune.pipeline.budget import PROTOCOLS
from lightning_prune.pipeline.frontier import best_at_budgets, frontier_report, run_frontier
from lightning_prune.pipeline.kept import ClassFractions, class_fractions, format_class_fractions, plot_kept_and_removed
from lightning_prune.pipeline.names import FULL, FULL_BUDGET, RANDOM, TARGET_SAVING, ratio_label, ratio_tag
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
        labels: the training labels in index order, when known: each class's kept fraction is read from them.
        training_inputs: the training inputs of some indices (one per index), when readable: image
            inputs give the picture of kept and removed samples.
    """

    run_dir: Path
    description: dict[str, Any]
    methods: list[str]
    prune_ratios: list[float]
    seeds: list[int]
    cells: list[dict[str, Any]]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    upfront_costs: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)
    labels: np.ndarray | None = None
    training_inputs: Callable[[np.ndarray], list[Any]] | None = None


def fraction_skipped(cell: dict[str, Any]) -> float:
    """The fraction of sample presentations a dynamic cell skipped. Cells written before it had its own
    field (``fraction_skipped``) carried it as ``prune_ratio_reached``."""
    return float(cell["fraction_skipped"] if "fraction_skipped" in cell else cell.get("prune_ratio_reached", 0.0))


def summarise(results: list[dict[str, Any]]) -> Summary:
    """``{method: {ratio: {"mean", "std", "runs", "dynamic", ...}}}`` of test accuracy over seeds.

    ``std`` is the population standard deviation over seeds (0 for one seed). A static method's entry has
    ``prune_ratio_reached``, the mean fraction of the training set actually removed (a learned selection
    may end away from its target); a ``dynamic`` method's (InfoBatch) removes nothing and has
    ``fraction_skipped`` instead, the mean fraction of sample presentations its training skipped.
    """
    grouped: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        grouped[result["method"]][float(result["prune_ratio"])].append(result)
    summary: Summary = {}
    for method, by_ratio in grouped.items():
        summary[method] = {}
        for ratio, cells in sorted(by_ratio.items()):
            accs = [cell["test_acc"] for cell in cells]
            dynamic = any(cell.get("dynamic", False) for cell in cells)
            entry: dict[str, Any] = {
                "mean": statistics.fmean(accs),
                "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                "runs": accs,
                "dynamic": dynamic,
            }
            if dynamic:
                entry["fraction_skipped"] = statistics.fmean(fraction_skipped(cell) for cell in cells)
                if any(cell.get("ratio_is") == TARGET_SAVING for cell in cells):
                    entry["ratio_is"] = TARGET_SAVING
            else:
                entry["prune_ratio_reached"] = statistics.fmean(
                    float(cell.get("prune_ratio_reached", ratio)) for cell in cells
                )
                on_top = {cell["dynamic_on_top"] for cell in cells if cell.get("dynamic_on_top")}
                if on_top:
                    entry["dynamic_on_top"] = "+".join(sorted(on_top))
                    entry["dynamic_fraction_skipped"] = statistics.fmean(
                        float(cell.get("dynamic_fraction_skipped", 0.0)) for cell in cells
                    )
            summary[method][ratio_label(ratio)] = entry
    return summary


def total_costs(results: RunResults) -> dict[str, dict[str, dict[str, float] | None]]:
    """``{method: {ratio: {"samples_forwarded", "seconds", "relative"}}}``: each method's total cost, its
    selection's (the scoring run for score-based methods, the mask training for AdaPruner) plus the
    mean coreset training over seeds; ``relative`` to the mean full-data training. ``None`` where a
    part was not recorded (a run made before costs were)."""
    check_cost_files(results.run_dir)
    trainings: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for cell in results.cells:
        _refuse_negative(
            {"samples_forwarded": cell.get("train_samples_forwarded", 0), "seconds": cell.get("train_seconds", 0)},
            f"the training of {cell['method']} at prune ratio {float(cell['prune_ratio']):.2f}, seed {cell['seed']}",
        )
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
            if upfront is not None:
                _refuse_negative(upfront, f"what {method}'s selection at prune ratio {label} cost")
            if training is None or upfront is None:
                totals[method][label] = None
                continue
            samples = training["samples_forwarded"] + upfront["samples_forwarded"]
            relative = samples / full["samples_forwarded"] if full and full["samples_forwarded"] else float("nan")
            seconds = training["seconds"] + upfront["seconds"]
            share = (
                upfront["samples_forwarded"] / full["samples_forwarded"] if full and full["samples_forwarded"] else 0.0
            )
            totals[method][label] = {
                "samples_forwarded": samples,
                "seconds": seconds,
                "relative": relative,
                "upfront": share,  # the one-off part (scoring, selection), x one full-data training
            }
    return totals


def _refuse_negative(record: dict[str, Any], what: str) -> None:
    negative = {key: record[key] for key in ("samples_forwarded", "seconds") if float(record.get(key) or 0) < 0}
    if negative:
        raise ValueError(
            f"The cost of {what} is negative ({negative}): the record is damaged. Delete it with what it paid "
            "for (the score file, selection or cell) and re-run to measure it again; a report never prints a "
            "negative cost."
        )


def cost_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "costs").glob("*.json"))


def unreadable_cost_files(run_dir: Path) -> list[Path]:
    """The cost records of ``run_dir`` that are truncated, damaged or not a cost record."""
    return [path for path in cost_files(run_dir) if _read_cost_record(path) is None]


def _read_cost_record(path: Path) -> dict[str, Any] | None:
    # read here, not through pipeline.cost (Lightning, torch): the report reads plain files only
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("samples_forwarded"), int | float):
        return None
    return record


def check_cost_files(run_dir: Path) -> None:
    """Refuse a negative cost record, naming its file (``costs/*.json``)."""
    for path in cost_files(run_dir):
        record = _read_cost_record(path)
        if record is not None:
            _refuse_negative(record, f"{path}")


def unknown_cost_notes(costs: dict[str, dict[str, dict[str, float] | None]], run_dir: Path) -> list[str]:
    """Why a cost shows "unknown": the unreadable cost files, named, or that none was recorded."""
    if not any(entry is None for by_label in costs.values() for entry in by_label.values()):
        return []
    damaged = unreadable_cost_files(run_dir)
    if damaged:
        return [
            f"  note: {path} is unreadable (truncated or damaged), so the costs that include it are unknown; "
            "delete it with what it paid for (the score file or selection) and re-run to measure it again"
            for path in damaged
        ]
    return [f"  note: 'unknown': no cost was recorded in {run_dir / 'costs'} (a run made before costs were)"]


def aligned(rows: list[list[Any]]) -> list[str]:
    """A text table: the first column left-aligned, the rest right-aligned, a rule under the header row."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


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
    return "\n".join(aligned([header, *rows]))


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
        rows.append([row_name(method, summary)] + [format_accuracy(entry) if entry else "-" for entry in entries])
    return "\n".join(aligned([header, *rows]) + reached_notes(summary))


def row_name(method: str, summary: Summary) -> str:
    """A method's name in the tables, saying how its ratio reads: "(target saving)" for a dynamic method
    given savings, "(+ infobatch)" for a static one that trains its coreset with a dynamic method."""
    entries = summary.get(method, {}).values()
    if any(entry.get("ratio_is") == TARGET_SAVING for entry in entries):
        return f"{method} (target saving)"
    on_top = sorted({entry["dynamic_on_top"] for entry in entries if entry.get("dynamic_on_top")})
    return f"{method} (+ {'+'.join(on_top)})" if on_top else method


def reached_notes(summary: Summary) -> list[str]:
    """One line per (method, ratio) whose selections removed another fraction than the target."""
    notes = []
    for method, by_ratio in summary.items():
        for label, entry in by_ratio.items():
            if method == FULL:
                continue
            if entry.get("ratio_is") == TARGET_SAVING:
                if abs(entry["fraction_skipped"] - float(label)) > TARGET_TOLERANCE:
                    notes.append(
                        f"  note: {method} (dynamic) at target saving {float(label):.0%} skipped "
                        f"{entry['fraction_skipped']:.1%} of the sample presentations, more than "
                        f"{TARGET_TOLERANCE:.0%} away from its target (see the training log's warning)"
                    )
            elif entry.get("dynamic"):
                # rs2 skips exactly its ratio; InfoBatch's ratio is a skip probability among well-learned samples
                if abs(entry["fraction_skipped"] - float(label)) > REACHED_NOTE_TOLERANCE:
                    notes.append(
                        f"  note: {method} (dynamic) at prune {float(label):.0%} skipped "
                        f"{entry['fraction_skipped']:.1%} of the sample presentations (its ratio is a setting of "
                        "how it prunes, e.g. InfoBatch's skip probability among well-learned samples)"
                    )
            elif abs((reached := entry["prune_ratio_reached"]) - float(label)) > REACHED_NOTE_TOLERANCE:
                notes.append(f"  note: {method} at prune {float(label):.0%} removed {reached:.1%} of the samples")
            if entry.get("dynamic_on_top"):
                skipped = entry["dynamic_fraction_skipped"]
                kept = 1.0 - entry["prune_ratio_reached"]
                notes.append(
                    f"  note: {method} at prune {float(label):.0%} trains its coreset with {entry['dynamic_on_top']}, "
                    f"which skipped {skipped:.1%} of the coreset's sample presentations: "
                    f"{1.0 - kept * (1.0 - skipped):.1%} of the full data's in all (the cost table charges both)"
                )
    return notes


@dataclass(frozen=True)
class PlotPoint:
    """One point of a plot: a method at one ratio (``label``), at ``x`` with accuracy ``y`` (in %)."""

    method: str
    label: str
    x: float
    y: float
    yerr: float
    dynamic: bool

    @property
    def text(self) -> str:
        """The point's ratio, as the tables print it (``"50%"``)."""
        return f"{float(self.label):.0%}"


def accuracy_points(summary: Summary) -> list[PlotPoint]:
    """The accuracy plot's points: a static method at its pruning ratio (% of the training set removed), a
    dynamic one at the fraction of sample presentations it skipped (it removes no sample; its ratio is a
    skip probability among well-learned samples and saves less)."""
    points = []
    for method, by_ratio in summary.items():
        if method == FULL:
            continue
        for label, entry in by_ratio.items():
            dynamic = bool(entry.get("dynamic"))
            x = 100 * (entry["fraction_skipped"] if dynamic else float(label))
            points.append(PlotPoint(method, label, x, 100 * entry["mean"], 100 * entry["std"], dynamic))
    return points


def cost_points(summary: Summary, costs: dict[str, dict[str, dict[str, float] | None]]) -> list[PlotPoint]:
    """The cost plot's points: every method (and the full data) at its total cost, where it is known."""
    return [
        PlotPoint(method, label, entry["relative"], 100 * summary[method][label]["mean"], 0.0, False)
        for method, by_label in costs.items()
        for label, entry in by_label.items()
        if entry is not None and label in summary.get(method, {})
    ]


def _style(method: str, dynamic: bool) -> dict[str, Any]:
    if method == RANDOM:
        return {"linestyle": "--", "color": "gray", "marker": "."}
    return {"marker": "s", "linestyle": "-."} if dynamic else {"marker": "o"}


def _plot_accuracy(summary: Summary, path: Path, title: str, num_seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.0, 4.4))
    if FULL in summary:
        full = next(iter(summary[FULL].values()))
        axis.axhline(100 * full["mean"], color="black", linestyle=":", label="full data")
    points = accuracy_points(summary)
    for method in dict.fromkeys(point.method for point in points):
        mine = sorted((p for p in points if p.method == method), key=lambda p: p.x)
        dynamic = any(p.dynamic for p in mine)
        axis.errorbar(
            [p.x for p in mine],
            [p.y for p in mine],
            yerr=[p.yerr for p in mine] if num_seeds > 1 else None,
            capsize=3,
            label=f"{method} (dynamic: at % skipped)" if dynamic else method,
            **_style(method, dynamic),
        )
        if dynamic:  # the ratio it was given, which is not where it lies on this axis
            for p in mine:
                axis.annotate(f"r={p.text}", (p.x, p.y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    dynamic_note = "\n(dynamic methods: % of sample presentations skipped)" if any(p.dynamic for p in points) else ""
    axis.set_xlabel(f"pruning ratio (% of training samples removed){dynamic_note}")
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
    points = cost_points(summary, costs)
    for method in dict.fromkeys(point.method for point in points):
        mine = sorted((p for p in points if p.method == method), key=lambda p: p.x)
        dynamic = any(summary[method][p.label].get("dynamic") for p in mine)
        style = _style(method, dynamic)
        if method == FULL:
            style = {"marker": "*", "color": "black", "markersize": 10, "linestyle": "none"}
        axis.plot([p.x for p in mine], [p.y for p in mine], label="full data" if method == FULL else method, **style)
    # the ratio tells apart points of one cost; methods sharing a scoring run share a cost at each ratio, so
    # each (cost, ratio) is labelled once, above its highest point, instead of once per method on top of each other
    tops: dict[tuple[float, str], PlotPoint] = {}
    for p in points:
        key = (round(p.x, 3), p.text)
        if p.method != FULL and (key not in tops or p.y > tops[key].y):
            tops[key] = p
    for p in tops.values():
        axis.annotate(p.text, (p.x, p.y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    frontier = run_frontier(summary, costs)
    if frontier is not None and len(frontier.points) > 1:
        axis.plot(
            [p.cost for p in frontier.points],
            [p.accuracy for p in frontier.points],
            color="tab:red",
            alpha=0.35,
            linewidth=6,
            zorder=0,
            label="equal-cost frontier (best baseline)",
        )
    axis.set_xlabel("total cost (samples forwarded, x one full-data training; scoring included)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("accuracy against total cost (mean over seeds; labels: pruning ratio)", fontsize=10)
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


def validated_choices(results: RunResults) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {ratio: {"chosen", "val_acc"}}}``: which candidate each validated selection kept, read
    from the selection files' manifests (``RUN/selections/KEY-rR.npz``)."""
    from lightning_prune.selection.selection import Selection

    choices: dict[str, dict[str, dict[str, Any]]] = {}
    for method in results.methods:
        for ratio in results.prune_ratios:
            path = results.run_dir / "selections" / f"{method}-{ratio_tag(ratio)}.npz"
            if not path.exists():
                continue
            validated = Selection.load(path).hparams.get("validated")
            if isinstance(validated, dict) and "chosen" in validated:
                choices.setdefault(method, {})[ratio_label(ratio)] = {
                    "chosen": validated["chosen"],
                    "val_acc": dict(validated.get("val_acc", {})),
                }
    return choices


def format_validated(choices: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One line per validated method and ratio: the candidate kept and every candidate's validation accuracy."""
    lines = []
    for method, by_label in choices.items():
        for label, choice in by_label.items():
            accuracies = ", ".join(f"{name} {100 * acc:.2f}" for name, acc in sorted(choice["val_acc"].items()))
            lines.append(
                f"  {method} at prune {float(label):.0%}: validation chose {choice['chosen']} (val_acc {accuracies})"
            )
    return lines


def format_frontier(rows: dict[str, dict[str, dict[str, Any]]], ratios: list[float]) -> str:
    """Points above (+) or below (-) the equal-cost frontier per method and ratio, with the reuse break-even
    of static methods (``n uses``; ``never``)."""
    header = ["method"] + [f"prune {r:.0%}" for r in ratios]
    table = []
    for method, by_label in rows.items():
        cells = []
        for ratio in ratios:
            row = by_label.get(ratio_label(ratio))
            if row is None:
                cells.append("-")
                continue
            text = "below range" if row["difference"] is None else f"{row['difference']:+.2f}"
            if "reuse_break_even" in row:
                uses = row["reuse_break_even"]
                text += " (never pays)" if uses is None else f" (pays after {uses} use{'s' if uses > 1 else ''})"
            cells.append(text)
        table.append([method, *cells])
    return "\n".join(aligned([header, *table]))


def budget_words(summary: Summary, costs: dict[str, dict[str, dict[str, float] | None]]) -> list[str]:
    """Plain words: the most accurate row of the run at each budget (the baselines' own costs, and any)."""
    budgets = sorted(
        {
            round(entry["relative"], 2)
            for method in (FULL_BUDGET, FULL)
            for entry in costs.get(method, {}).values()
            if entry
        }
    )
    lines = []
    for budget, method, label, accuracy, cost in best_at_budgets(summary, costs, [*budgets, float("inf")]):
        within = "any budget" if budget == float("inf") else f"up to {budget:.2f}x"
        where = "" if method == FULL else f" at prune {float(label):.0%}"
        lines.append(f"- {within}: {method}{where}, {accuracy:.2f}% for {cost:.2f}x")
    return lines


def build_report(results: RunResults) -> dict[str, Any]:
    """The report of a run's results (what ``report.json`` holds), written nowhere."""
    summary = summarise(results.cells)
    costs = total_costs(results)
    budget = results.description.get("budget", "epochs")  # runs made before the setting are "epochs"
    kept: ClassFractions = (
        {}
        if results.labels is None
        else class_fractions(results.run_dir, results.methods, results.prune_ratios, results.seeds, results.labels)
    )
    return {
        "run_dir": str(results.run_dir),
        "description": results.description,
        "budget": budget,
        "methods": results.methods,
        "prune_ratios": results.prune_ratios,
        "seeds": results.seeds,
        "test_accuracy": summary,
        "total_cost": costs,
        "validated": validated_choices(results),
        # points to the equal-cost frontier (baselines interpolated between measured points) and reuse break-even
        "frontier": frontier_report(summary, costs, reuse_break_even=PROTOCOLS[budget].coreset_saves_compute),
        # per static method and ratio, the fraction of each class's samples kept (class 0, 1, ...)
        "kept_per_class": kept,
        "cells": results.cells,
    }


def write_report(results: RunResults, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``report.json`` and the plots into the run directory, print the table; return the report."""
    report = build_report(results)
    summary, costs, choices = report["test_accuracy"], report["total_cost"], report["validated"]
    frontier, budget, kept = report["frontier"], report["budget"], report["kept_per_class"]
    protocol = PROTOCOLS[budget]
    write_text_atomic(results.run_dir / "report.json", json.dumps(report, indent=2, default=str))
    plots = results.run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    title = f"{results.run_dir.name}: coreset accuracy"
    _plot_accuracy(summary, plots / "accuracy_vs_prune_ratio.png", title, len(results.seeds))
    _plot_accuracy_vs_cost(summary, costs, plots / "accuracy_vs_cost.png")
    if results.scores:
        _plot_histograms(results.scores, plots / "score_histograms.png")
    if kept and results.labels is not None and results.training_inputs is not None:
        plot_kept_and_removed(
            results.run_dir,
            kept,
            results.prune_ratios,
            results.labels,
            results.training_inputs,
            plots / "kept_and_removed.png",
        )
    spread = "mean ± std over seeds " if len(results.seeds) > 1 else "seed "
    log(
        f"\nTest accuracy (%, {spread}"
        + ", ".join(map(str, results.seeds))
        + f"; protocol budget: {budget}, {protocol.words}):\n"
        + format_table(summary, results.prune_ratios)
    )
    if kept:
        log("\nKept fraction per class (the least and the most kept class of each selection; all in report.json):")
        log("\n".join(format_class_fractions(kept)))
    if choices:
        log("\nValidated selections (the candidate kept at each ratio, by validation accuracy in %):")
        log("\n".join(format_validated(choices)))
    log(
        "\nTotal cost (samples forwarded: scoring or mask training + coreset training, x one full-data training):\n"
        + "\n".join([format_cost_table(costs, results.prune_ratios), *unknown_cost_notes(costs, results.run_dir)])
    )
    if frontier:
        log(
            "\nAgainst the equal-cost frontier (points of test accuracy above + or below - the best baseline -- "
            "full data, full-budget, rs2, random -- at the same total cost, interpolated between measured "
            "baseline points; "
            + (
                "static methods: uses of the coreset after which its cost per use falls below the frontier's at "
                "equal accuracy"
                if protocol.coreset_saves_compute
                else "no reuse break-even: equal steps save no compute per use"
            )
            + "):\n"
            + format_frontier(frontier, results.prune_ratios)
        )
    words = budget_words(summary, costs)
    if words:
        log("\nBest accuracy for the compute, in this run:\n" + "\n".join(words))
    log(f"\nReport: {results.run_dir / 'report.json'}; plots: {plots}")
    return report
