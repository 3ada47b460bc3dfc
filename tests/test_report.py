"""The report step on plain data: table formatting, reached ratios, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import TINY, run_cli

from lightning_prune.pipeline.report import (
    RunResults,
    accuracy_points,
    cost_points,
    format_cost_table,
    format_table,
    histogram_bins,
    summarise,
    total_costs,
    write_report,
)
from lightning_prune.selection.selection import Selection


def _cell(method, ratio, seed, acc, reached=None):
    cell = {"method": method, "prune_ratio": ratio, "seed": seed, "test_acc": acc}
    if reached is not None:
        cell["prune_ratio_reached"] = reached
    return cell


def test_one_seed_prints_the_value_alone_and_several_print_the_spread():
    one = format_table(summarise([_cell("full", 0.0, 0, 0.99), _cell("tdds", 0.5, 0, 0.95)]), [0.5])
    assert "95.00" in one and "±" not in one
    two = format_table(summarise([_cell("tdds", 0.5, 0, 0.95), _cell("tdds", 0.5, 1, 0.93)]), [0.5])
    assert "94.00 ± 1.00" in two


def test_a_selection_that_missed_its_ratio_gets_a_note_with_the_ratio_reached():
    cells = [_cell("adapruner", 0.5, 0, 0.9, reached=0.002), _cell("random", 0.5, 0, 0.9, reached=0.5)]
    summary = summarise(cells)
    assert summary["adapruner"]["0.50"]["prune_ratio_reached"] == 0.002
    table = format_table(summary, [0.5])
    assert "adapruner at prune 50% removed 0.2% of the samples" in table
    assert "random at prune" not in table


def test_integer_scores_get_one_bin_per_value():
    counts = np.array([0, 1, 1, 2, 5, 5, 5], dtype=np.float64)
    assert np.array_equal(histogram_bins(counts), np.arange(-0.5, 6.0))
    assert histogram_bins(np.linspace(0, 1, 100)) == 50
    assert histogram_bins(np.arange(1000, dtype=np.float64)) == 50  # too many distinct counts: equal bins


def test_write_report_from_plain_data(tmp_path):
    cells = [_cell("full", 0.0, 0, 0.99), _cell("tdds", 0.5, 0, 0.95), _cell("random", 0.5, 0, 0.94)]
    printed: list[str] = []
    report = write_report(
        RunResults(tmp_path, {"data": "x"}, ["tdds"], [0.5], [0], cells, {"tdds": np.arange(10.0)}), log=printed.append
    )
    assert json.loads((tmp_path / "report.json").read_text())["test_accuracy"] == report["test_accuracy"]
    assert (tmp_path / "plots" / "accuracy_vs_prune_ratio.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "score_histograms.png").exists()
    assert "seed 0" in printed[0] and "±" not in printed[0]


@pytest.mark.slow
def test_a_learned_selection_far_from_its_target_is_warned_and_reported(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    # one epoch of AdaPruner with no warm-up cannot move the mask from keeping everything to keeping half
    run_cli("run", config, out, "--methods", "[{name: adapruner, args: {epochs: 1, warmup_epochs: 0, mask_lr: 0.0}}]")
    printed = capsys.readouterr().out
    assert "WARNING: adapruner at prune ratio 0.50 removed" in printed
    cell = json.loads((out / "cells" / "adapruner-r0.50-s0.json").read_text())
    assert abs(cell["prune_ratio_reached"] - 0.5) > 0.05
    assert "note: adapruner at prune 50% removed" in printed
    mask_training = json.loads((out / "costs" / "select-adapruner-r0.50.json").read_text())
    assert mask_training["samples_forwarded"] == 1078 and mask_training["epochs"] == 1  # charged to adapruner


def test_long_trainings_print_epoch_progress_with_an_eta(tmp_path, capsys, monkeypatch):
    import lightning_prune.pipeline.progress as progress

    monkeypatch.setattr(progress, "PROGRESS_INTERVAL_S", 0.0)  # every epoch counts as long here
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    run_cli("score", config, tmp_path / "run")
    printed = capsys.readouterr().out
    assert "[score] epoch 1/3 (" in printed and "ETA" in printed


def test_short_trainings_print_no_progress_lines(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    run_cli("score", config, tmp_path / "run")
    assert "[score] epoch" not in capsys.readouterr().out


@pytest.mark.slow
def test_every_method_is_charged_its_total_cost(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)  # 1,078 training samples, score_epochs 3, train_epochs 1, prune 50%
    out = tmp_path / "run"
    run_cli("run", config, out)
    cells = {c["method"]: c for c in json.loads((out / "report.json").read_text())["cells"]}
    assert cells["full"]["train_samples_forwarded"] == 1078 and cells["full"]["train_epochs"] == 1
    assert cells["tdds"]["train_samples_forwarded"] == 539 and cells["random"]["train_samples_forwarded"] == 539
    assert json.loads((out / "costs" / "score-tdds.json").read_text())["samples_forwarded"] == 3 * 1078
    costs = json.loads((out / "report.json").read_text())["total_cost"]
    assert costs["tdds"]["0.50"]["relative"] == pytest.approx((3 * 1078 + 539) / 1078)  # scoring run charged
    assert costs["forgetting"]["0.50"]["relative"] == pytest.approx((3 * 1078 + 539) / 1078)  # to each method
    assert costs["random"]["0.50"]["relative"] == pytest.approx(0.5)
    assert costs["full"]["0.00"]["relative"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "Total cost" in printed and "3.50x" in printed and "0.50x" in printed
    assert (out / "plots" / "accuracy_vs_cost.png").stat().st_size > 1000


def test_costs_of_a_run_made_before_they_were_recorded_are_unknown(tmp_path):
    cells = [_cell("full", 0.0, 0, 0.99), _cell("tdds", 0.5, 0, 0.95)]
    results = RunResults(tmp_path, {}, ["tdds"], [0.5], [0], cells, upfront_costs={"tdds": {"0.50": None}})
    table = format_cost_table(total_costs(results), [0.5])
    assert "unknown" in table


def _dynamic(ratio, seed, acc, **fields):
    return {"method": "infobatch", "prune_ratio": ratio, "seed": seed, "test_acc": acc, "dynamic": True, **fields}


@pytest.mark.parametrize(
    "fields",
    [
        {"prune_ratio_reached": 0.285},  # cells written before the skipped fraction had its own field
        {"fraction_skipped": 0.285},
    ],
)
def test_a_dynamic_method_is_plotted_at_the_fraction_it_skipped_not_its_ratio(fields):
    cells = [_cell("full", 0.0, 0, 0.99), _dynamic(0.5, 0, 0.98, **fields), _cell("random", 0.5, 0, 0.9, 0.5)]
    summary = summarise(cells)
    assert summary["infobatch"]["0.50"]["fraction_skipped"] == pytest.approx(0.285)
    points = {(p.method, p.label): p for p in accuracy_points(summary)}
    assert points["infobatch", "0.50"].x == pytest.approx(28.5)  # not 50: it skipped 28.5% of presentations
    assert points["infobatch", "0.50"].dynamic and points["random", "0.50"].x == pytest.approx(50.0)
    assert "skipped 28.5% of the sample presentations" in format_table(summary, [0.5])


def test_every_point_of_the_cost_plot_carries_its_ratio(tmp_path):
    cells = [
        {**_cell(m, r, 0, 0.9), "train_samples_forwarded": int(1000 * (1 - r)), "train_seconds": 1.0}
        for m, r in [("full", 0.0), ("tdds", 0.3), ("tdds", 0.7), ("random", 0.3), ("random", 0.7)]
    ]
    upfront = {"tdds": {"0.30": {"samples_forwarded": 500, "seconds": 1.0}, "0.70": None}}
    results = RunResults(tmp_path, {}, ["tdds"], [0.3, 0.7], [0], cells, upfront_costs=upfront)
    points = cost_points(summarise(cells), total_costs(results))
    assert {(p.method, p.text) for p in points if p.method != "full"} == {
        ("tdds", "30%"),
        ("random", "30%"),
        ("random", "70%"),
    }  # tdds at 70% has an unknown cost: no point, rather than a wrong one
    assert next(p for p in points if p.method == "tdds").x == pytest.approx(1.2)


def test_the_report_prints_which_validated_candidate_won(tmp_path):
    (tmp_path / "selections").mkdir()
    chosen = Selection(
        np.arange(5), 10, hparams={"validated": {"chosen": "easy", "val_acc": {"easy": 0.9, "random": 0.8}}}
    )
    chosen.save(tmp_path / "selections" / "recommended-r0.50.npz")
    Selection(np.arange(5), 10).save(tmp_path / "selections" / "tdds-r0.50.npz")  # not validated: no line
    cells = [_cell("full", 0.0, 0, 0.99), _cell("recommended", 0.5, 0, 0.95), _cell("tdds", 0.5, 0, 0.9)]
    printed: list[str] = []
    report = write_report(RunResults(tmp_path, {}, ["recommended", "tdds"], [0.5], [0], cells), log=printed.append)
    text = "\n".join(printed)
    assert "recommended at prune 50%: validation chose easy (val_acc easy 90.00, random 80.00)" in text
    assert "tdds at prune 50%: validation" not in text
    assert report["validated"] == {"recommended": {"0.50": {"chosen": "easy", "val_acc": {"easy": 0.9, "random": 0.8}}}}


def test_an_unreadable_cost_file_is_named_where_the_cost_is_unknown(tmp_path):
    (tmp_path / "costs").mkdir()
    (tmp_path / "costs" / "score-tdds.json").write_text('{"samples_forwarded": 32')  # truncated by a kill
    cells = [_cell("full", 0.0, 0, 0.99), _cell("tdds", 0.5, 0, 0.95)]
    printed: list[str] = []
    write_report(
        RunResults(tmp_path, {}, ["tdds"], [0.5], [0], cells, upfront_costs={"tdds": {"0.50": None}}),
        log=printed.append,
    )
    text = "\n".join(printed)
    assert "unknown" in text and str(tmp_path / "costs" / "score-tdds.json") in text


def test_a_negative_cost_is_refused_naming_its_file(tmp_path):
    (tmp_path / "costs").mkdir()
    bad = tmp_path / "costs" / "score-tdds.json"
    bad.write_text(json.dumps({"samples_forwarded": -16128, "epochs": 3, "seconds": 1.0}))
    cells = [_cell("full", 0.0, 0, 0.99), _cell("tdds", 0.5, 0, 0.95)]
    upfront = {"tdds": {"0.50": {"samples_forwarded": -16128, "seconds": 1.0}}}
    with pytest.raises(ValueError, match="score-tdds.json"):
        total_costs(RunResults(tmp_path, {}, ["tdds"], [0.5], [0], cells, upfront_costs=upfront))


def test_a_negative_training_cost_in_a_cell_is_refused_naming_the_cell(tmp_path):
    cells = [
        {**_cell("full", 0.0, 0, 0.99), "train_samples_forwarded": 1078, "train_seconds": 1.0},
        {**_cell("tdds", 0.5, 1, 0.95), "train_samples_forwarded": -539, "train_seconds": 1.0},
    ]
    with pytest.raises(ValueError, match="tdds at prune ratio 0.50, seed 1"):
        total_costs(RunResults(tmp_path, {}, ["tdds"], [0.5], [1], cells))
