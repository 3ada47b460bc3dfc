"""Read the three study runs' ``report.json`` files, print one table per data set (test accuracy,
mean ± std over seeds, with each method's total cost) and a check of issue 9's criteria, and draw
``plots/study.png`` (accuracy against pruning ratio, one panel per data set).

Run after the three ``lightning-prune run --config examples/study/NAME.yaml`` runs:
    python examples/study/summarise.py RUN_DIR_DIGITS RUN_DIR_NOISY RUN_DIR_TABULAR [--plot plots/study.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAMES = ("digits", "digits, 20% labels flipped", "synthetic tabular")
RECOMMENDED = "recommended"


def load(run_dir: str) -> dict:
    return json.loads((Path(run_dir) / "report.json").read_text())


def accuracy(entry: dict) -> str:
    """``"98.52 ± 0.90"`` over several seeds; the value alone for one seed (it has no spread)."""
    mean = f"{100 * entry['mean']:.2f}"
    return mean if len(entry.get("runs", [])) == 1 else f"{mean} ± {100 * entry['std']:.2f}"


def table(report: dict, title: str) -> str:
    ratios = [f"{r:.2f}" for r in report["prune_ratios"]]
    results, cost = report["test_accuracy"], report.get("total_cost", {})
    full = next(iter(results["full"].values()))
    protocol = f"budget: {report.get('budget', 'epochs')}"
    lines = [
        f"### {title} ({protocol})",
        "",
        "| method | " + " | ".join(f"prune {float(r):.0%}" for r in ratios) + " |",
    ]
    lines.append("|---|" + "---|" * len(ratios))
    lines.append(f"| full data | {accuracy(full)} (1.0x) |" + " |" * (len(ratios) - 1))
    for method in [m for m in results if m != "full"]:
        cells = []
        for r in ratios:
            entry, spent = results[method].get(r), (cost.get(method) or {}).get(r)
            if entry is None:
                cells.append("-")
                continue
            suffix = f" ({spent['relative']:.2f}x)" if spent else ""
            cells.append(f"{accuracy(entry)}{suffix}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    frontier = report.get("frontier", {})
    if frontier:
        lines += [
            "",
            "Points to the equal-cost frontier at each method's total cost"
            + (" (static: uses after which it pays):" if report.get("budget", "epochs") == "epochs" else ":"),
            "",
        ]
        lines.append("| method | " + " | ".join(f"prune {float(r):.0%}" for r in ratios) + " |")
        lines.append("|---|" + "---|" * len(ratios))
        for method, by_ratio in frontier.items():
            lines.append(f"| {method} | " + " | ".join(against(by_ratio.get(r)) for r in ratios) + " |")
    for method, by_ratio in report.get("validated", {}).items():
        chosen = ", ".join(f"{float(r):.0%} {choice['chosen']}" for r, choice in sorted(by_ratio.items()))
        lines.append(f"\n{method}: validation chose {chosen}")
    return "\n".join(lines)


def against(row: dict | None) -> str:
    """``"-0.74 (pays after 169 uses)"``: a method's difference to the frontier and its reuse break-even."""
    if row is None or row.get("difference") is None:
        return "-"
    text = f"{row['difference']:+.2f}"
    if "reuse_break_even" in row:
        uses = row["reuse_break_even"]
        text += " (never pays)" if uses is None else f" (pays after {uses} use{'s' if uses != 1 else ''})"
    return text


def criteria(reports: list[dict]) -> list[str]:
    notes, ahead = [], 0
    for report, name in zip(reports, NAMES, strict=True):
        accuracy = report["test_accuracy"]
        gaps = {r: 100 * (accuracy[RECOMMENDED][r]["mean"] - accuracy["random"][r]["mean"]) for r in accuracy["random"]}
        behind = [f"{float(r):.0%} ({gap:+.2f})" for r, gap in gaps.items() if gap < 0]
        notes.append(
            f"{name}: recommended - random = "
            + ", ".join(f"{float(r):.0%} {gap:+.2f}" for r, gap in sorted(gaps.items()))
            + (f"; BEHIND random at {', '.join(behind)}" if behind else "; never behind random")
        )
        ahead += gaps.get("0.70", 0) >= 2 and gaps.get("0.90", 0) >= 2
    notes.append(f">= 2 points ahead of random at both 70% and 90%: {ahead} of {len(reports)} data sets")
    return notes


def plot(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 4), sharey=False)
    for axis, report, name in zip(axes, reports, NAMES, strict=True):
        accuracy = report["test_accuracy"]
        full = next(iter(accuracy["full"].values()))
        axis.axhline(100 * full["mean"], color="black", linestyle="--", label="full data")
        for method in [m for m in accuracy if m != "full"]:
            ratios = sorted(accuracy[method], key=float)
            means = [100 * accuracy[method][r]["mean"] for r in ratios]
            stds = [100 * accuracy[method][r]["std"] for r in ratios]
            # a dynamic method (InfoBatch) removes no sample: it lies at the fraction of presentations it skipped
            xs = [100 * accuracy[method][r].get("fraction_skipped", float(r)) for r in ratios]
            dynamic = any(accuracy[method][r].get("dynamic") for r in ratios)
            style = {"linewidth": 2.5} if method == RECOMMENDED else {"linewidth": 1.2}
            label = f"{method} (dynamic: at % skipped)" if dynamic else method
            axis.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label, **style)
        axis.set_title(f"{name} (budget: {report.get('budget', 'epochs')})")
        axis.set_xlabel("pruning ratio (% of training set removed)")
        axis.set_ylabel("test accuracy (%), mean ± std over 3 seeds")
        axis.grid(alpha=0.3)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs=3)
    parser.add_argument("--plot", default="plots/study.png")
    args = parser.parse_args()
    reports = [load(run) for run in args.runs]
    for report, name in zip(reports, NAMES, strict=True):
        print(table(report, name), end="\n\n")
    print("\n".join(criteria(reports)))
    plot(reports, Path(args.plot))
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
