"""What each selection kept: per-class kept fractions in report.json and printed, the kept/removed picture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightning_prune.pipeline.kept import as_image, kept_fraction_per_class, pictured
from lightning_prune.pipeline.report import RunResults, write_report
from lightning_prune.selection.selection import Selection

LABELS = np.repeat(np.arange(3), 10)  # 3 classes of 10 samples


def _cell(method, ratio, seed, acc):
    return {"method": method, "prune_ratio": ratio, "seed": seed, "test_acc": acc}


def _run_dir(tmp_path):
    folder = tmp_path / "selections"
    # tdds keeps 8 of class 0, 2 of class 1, 5 of class 2; random keeps 5 / 5 / 5 on seed 0, 3 / 7 / 5 on seed 1
    kept = {
        "tdds-r0.50.npz": [*range(8), 10, 11, *range(20, 25)],
        "random-r0.50-s0.npz": [*range(5), *range(10, 15), *range(20, 25)],
        "random-r0.50-s1.npz": [*range(3), *range(10, 17), *range(20, 25)],
    }
    for name, indices in kept.items():
        Selection(np.array(indices), num_samples=LABELS.size).save(folder / name)
    cells = [_cell("full", 0.0, seed, 0.99) for seed in (0, 1)]
    cells += [_cell(key, 0.5, seed, 0.9) for key in ("tdds", "random") for seed in (0, 1)]
    return cells


def test_kept_fraction_per_class_counts_each_class_and_an_empty_one():
    assert kept_fraction_per_class(np.array([0, 1, 20]), LABELS, 4) == [0.2, 0.0, 0.1, 0.0]


def test_report_records_and_prints_each_class_kept_fraction(tmp_path):
    cells, printed = _run_dir(tmp_path), []
    results = RunResults(tmp_path, {}, ["tdds", "infobatch"], [0.5], [0, 1], cells, labels=LABELS)
    report = write_report(results, log=printed.append)
    kept = json.loads((tmp_path / "report.json").read_text())["kept_per_class"]
    assert kept == report["kept_per_class"]
    assert kept == {"tdds": {"0.50": [0.8, 0.2, 0.5]}, "random": {"0.50": [0.4, 0.6, 0.5]}}  # random: mean of seeds
    text = "\n".join(printed)
    assert "tdds at prune 50%: classes kept 20% (class 1) to 80% (class 0)" in text
    assert "random at prune 50%: classes kept 40% (class 0) to 60% (class 1)" in text
    assert not (tmp_path / "plots" / "kept_and_removed.png").exists()  # no inputs given: no picture


def test_image_inputs_get_the_kept_and_removed_picture(tmp_path):
    cells = _run_dir(tmp_path)
    read: list[int] = []

    def inputs(indices):
        read.extend(int(i) for i in indices)
        return [np.full((1, 8, 8), float(i)) + np.eye(8) for i in indices]

    results = RunResults(tmp_path, {}, ["tdds"], [0.5], [0, 1], cells, labels=LABELS, training_inputs=inputs)
    write_report(results, log=lambda line: None)
    assert (tmp_path / "plots" / "kept_and_removed.png").stat().st_size > 5000
    # the most kept class (0) and the least kept (1), up to 6 kept and 6 removed samples of each
    kept = set(Selection.load(tmp_path / "selections" / "tdds-r0.50.npz").indices.tolist())
    assert {LABELS[i] for i in read} == {0, 1}
    assert sum(i in kept for i in read) == 6 + 2 and sum(i not in kept for i in read) == 2 + 6


def test_feature_vectors_get_no_picture(tmp_path):
    cells = _run_dir(tmp_path)
    results = RunResults(
        tmp_path, {}, ["tdds"], [0.5], [0, 1], cells, labels=LABELS, training_inputs=lambda idx: [np.ones(5)] * len(idx)
    )
    write_report(results, log=lambda line: None)
    assert not (tmp_path / "plots" / "kept_and_removed.png").exists()


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        (np.ones((1, 4, 5)), (4, 5)),
        (np.ones((3, 4, 5)), (4, 5, 3)),
        (np.ones((4, 5)), (4, 5)),
        (np.ones(7), None),
        (np.ones((4, 4, 4)), None),
        ({"x": 1}, None),
    ],
)
def test_as_image_takes_grey_and_colour_images_only(value, shape):
    image = as_image(value)
    assert (image is None) if shape is None else (image.shape == shape and image.min() >= 0 and image.max() <= 1)


def test_a_fully_kept_class_shows_no_removed_samples():
    groups = pictured(np.arange(10), LABELS, [1.0, 0.0, 0.0])
    assert groups[0][0] == 0 and groups[0][2].size == 0 and groups[0][1].size == 6
