"""What each static selection of a run kept: the kept fraction of every class, and, for image data, a
picture of kept and removed samples of the most and the least kept class.

Read from the run's selection files (``RUN/selections/KEY-rR.npz``, and the random baseline's
``random-rR-sS.npz`` averaged over seeds) and the training labels, so it is rebuilt from the files of a
finished run; dynamic methods remove nothing and have none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lightning_prune.pipeline.context import RunFiles
from lightning_prune.pipeline.names import RANDOM, ratio_label
from lightning_prune.selection.selection import Selection

ClassFractions = dict[str, dict[str, list[float]]]
"""``{method: {ratio label: [kept fraction of class 0, 1, ...]}}``."""

PICTURED_PER_GROUP = 6
"""Samples shown per class and group (kept, removed) in the picture."""


def kept_fraction_per_class(indices: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """The fraction of each class's samples that ``indices`` keep (0 for a class with no samples)."""
    totals = np.bincount(labels, minlength=num_classes)
    kept = np.bincount(labels[indices], minlength=num_classes)
    return [float(k / t) if t else 0.0 for k, t in zip(kept, totals, strict=True)]


def selection_files(run_dir: Path, method: str, ratio: float, seeds: list[int]) -> list[Path]:
    """The selection files of ``method`` at ``ratio``: the method's one, or the random baseline's per seed."""
    files = RunFiles(run_dir)
    paths = (
        [files.selection_path(RANDOM, ratio, seed) for seed in seeds]
        if method == RANDOM
        else [files.selection_path(method, ratio)]
    )
    return [path for path in paths if path.exists()]


def class_fractions(
    run_dir: Path, methods: list[str], ratios: list[float], seeds: list[int], labels: np.ndarray
) -> ClassFractions:
    """Per static method (and the random baseline, mean over seeds) and ratio, each class's kept fraction."""
    num_classes = int(labels.max()) + 1
    fractions: ClassFractions = {}
    for method in [*methods, RANDOM]:
        for ratio in ratios:
            files = selection_files(run_dir, method, ratio, seeds)
            if not files:
                continue
            per_file = [kept_fraction_per_class(Selection.load(path).indices, labels, num_classes) for path in files]
            fractions.setdefault(method, {})[ratio_label(ratio)] = np.mean(per_file, axis=0).tolist()
    return fractions


def format_class_fractions(fractions: ClassFractions) -> list[str]:
    """One line per method and ratio: the overall kept fraction and the least and most kept classes."""
    lines = []
    for method, by_label in fractions.items():
        for label, per_class in by_label.items():
            least, most = int(np.argmin(per_class)), int(np.argmax(per_class))
            lines.append(
                f"  {method} at prune {float(label):.0%}: classes kept {per_class[least]:.0%} (class {least}) to "
                f"{per_class[most]:.0%} (class {most})"
            )
    return lines


def as_image(value: Any) -> np.ndarray | None:
    """A training input as an ``[H, W]`` or ``[H, W, 3]`` image in [0, 1] (its own min-max), or ``None`` where
    it is not an image (a feature vector, more than 3 channels, a dict of inputs)."""
    try:
        sample = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if sample.ndim == 3 and sample.shape[0] in (1, 3):
        sample = sample[0] if sample.shape[0] == 1 else np.moveaxis(sample, 0, -1)
    elif sample.ndim != 2:
        return None
    low, high = float(sample.min()), float(sample.max())
    return (sample - low) / (high - low) if high > low else np.zeros_like(sample)


def pictured(
    indices: np.ndarray, labels: np.ndarray, per_class: list[float], seed: int = 0
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(class, kept samples, removed samples)`` of the most and the least kept class, up to
    :data:`PICTURED_PER_GROUP` of each drawn at random (fixed ``seed``)."""
    rng = np.random.default_rng(seed)
    kept = np.zeros(labels.size, dtype=bool)
    kept[indices] = True
    classes = list(dict.fromkeys([int(np.argmax(per_class)), int(np.argmin(per_class))]))
    groups = []
    for label in classes:
        members = labels == label
        shown = [
            np.sort(rng.choice(group, min(PICTURED_PER_GROUP, group.size), replace=False))
            for group in (np.flatnonzero(members & kept), np.flatnonzero(members & ~kept))
        ]
        groups.append((label, shown[0], shown[1]))
    return groups


def plot_kept_and_removed(
    run_dir: Path,
    fractions: ClassFractions,
    ratios: list[float],
    labels: np.ndarray,
    training_inputs: Callable[[np.ndarray], list[Any]],
    path: Path,
) -> bool:
    """Draw, per static method at the run's largest ratio, kept and removed samples of its most and least kept
    class; returns whether the inputs were images (nothing is drawn otherwise)."""
    ratio = max(ratios)
    label = ratio_label(ratio)
    rows: list[tuple[str, int, float, list[np.ndarray], list[np.ndarray]]] = []
    for method, by_label in fractions.items():
        if method == RANDOM or label not in by_label:
            continue
        selection = Selection.load(selection_files(run_dir, method, ratio, [])[0])
        for cls, kept, removed in pictured(selection.indices, labels, by_label[label]):
            images = [as_image(x) for x in training_inputs(np.concatenate([kept, removed]))]
            if any(image is None for image in images):
                return False
            shown = [image for image in images if image is not None]
            rows.append((method, cls, by_label[label][cls], shown[: kept.size], shown[kept.size :]))
    if not rows:
        return False

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2 * PICTURED_PER_GROUP + 1  # kept | gap | removed
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(0.75 * columns + 2.2, 0.8 * len(rows) + 0.8), squeeze=False
    )
    for row, (method, cls, fraction, kept_images, removed_images) in zip(axes, rows, strict=True):
        cells = [*kept_images, *[None] * (PICTURED_PER_GROUP - len(kept_images)), None]
        cells += [*removed_images, *[None] * (PICTURED_PER_GROUP - len(removed_images))]
        for axis, image in zip(row, cells, strict=True):
            axis.set_axis_off()
            if image is not None:
                axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
        row[0].text(
            -0.15,
            0.5,
            f"{method}\nclass {cls}: {fraction:.0%} kept",
            transform=row[0].transAxes,
            ha="right",
            va="center",
            fontsize=8,
        )
    axes[0][PICTURED_PER_GROUP // 2].set_title("kept", fontsize=9)
    axes[0][PICTURED_PER_GROUP + 1 + PICTURED_PER_GROUP // 2].set_title("removed", fontsize=9)
    figure.suptitle(
        f"{run_dir.name}: kept and removed samples at prune {ratio:.0%}, most and least kept class per method",
        fontsize=9,
    )
    figure.subplots_adjust(left=0.2, right=0.99, top=1 - 0.45 / (0.8 * len(rows) + 0.8), bottom=0.02, wspace=0.08)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
