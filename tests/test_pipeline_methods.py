"""Methods reach the pipeline through one protocol: a new kind of method needs no change to the runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import TINY, run_cli

import lightning_prune as lp
from lightning_prune.pipeline.methods import (
    SELECTING_METHODS,
    AdaPrunerMethod,
    InfluenceMethod,
    ScoreBased,
    SelectionMethod,
    method_for,
)


class LowestIndices(SelectionMethod):
    """A selecting method for the test: keeps the lowest indices (no collector, no cost: the defaults)."""

    def selection(self, run, spec, ratio):
        num_samples, labels = run.training_set_facts()
        keep = num_samples - round(ratio * num_samples)
        return lp.Selection(
            indices=np.arange(keep),
            num_samples=num_samples,
            method=spec.key,
            label_fingerprint=lp.Scores(values=np.zeros(num_samples), method="x", labels=labels).label_fingerprint,
        )


def test_method_for_dispatches_by_kind():
    assert isinstance(method_for("tdds"), ScoreBased) and method_for("tdds").uses_scores
    assert isinstance(method_for("adapruner"), AdaPrunerMethod) and not method_for("adapruner").uses_scores
    assert isinstance(method_for("influence"), InfluenceMethod) and method_for("influence").needs_scoring_model
    with pytest.raises(ValueError, match="Unknown method 'nonsense'; choose from"):
        method_for("nonsense")


@pytest.mark.slow
def test_a_registered_method_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(SELECTING_METHODS, "lowest", LowestIndices())
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    run_cli("run", config, out, "--methods", "[{name: lowest}]")
    selection = lp.Selection.load(out / "selections" / "lowest-r0.50.npz")
    assert selection.indices.tolist() == list(range(len(selection)))
    assert not (out / "scores").exists() or not list((out / "scores").iterdir())  # no scoring run was needed
    report = json.loads((out / "report.json").read_text())
    assert set(report["test_accuracy"]) == {"full", "lowest", "random"}


@pytest.mark.slow
def test_infobatch_is_a_dynamic_row_of_the_study(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    run_cli("run", config, out, "--methods", "[{name: infobatch}]", "--train_epochs", "4")
    assert not (out / "selections" / "infobatch-r0.50.npz").exists()  # dynamic: nothing selected up front
    cell = json.loads((out / "cells" / "infobatch-r0.50-s0.json").read_text())
    full = json.loads((out / "cells" / "full-r0.00-s0.json").read_text())
    assert cell["dynamic"] is True and cell["num_train"] is None
    # a dynamic cell removes nothing from the training set: it records what its training skipped instead
    assert "prune_ratio_reached" not in cell
    # epoch 0 has no losses yet and epoch 3 is annealed (floor(0.875 * 4) = 3): epochs 1 and 2 skip samples
    assert 0 < cell["fraction_skipped"] < 0.5 * 2 / 4
    assert cell["train_samples_forwarded"] == round((1 - cell["fraction_skipped"]) * full["train_samples_forwarded"])
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["total_cost"]["infobatch"]["0.50"]["relative"] < 1  # no scoring run to pay for
    assert "infobatch (dynamic) at prune 50% skipped" in capsys.readouterr().out


def test_a_ratio_infobatch_cannot_run_is_refused_before_training(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    with pytest.raises(SystemExit):
        run_cli("run", config, tmp_path / "run", "--methods", "[{name: infobatch}]", "--prune_ratios", "[0.95]")
    assert not (tmp_path / "run" / "cells").exists()


@pytest.mark.slow
def test_a_method_can_score_from_a_shorter_run_and_pays_only_for_it(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    methods = "[{name: tdds, args: {trajectory: 3, window: 3}}, {name: el2n, label: el2n-early, args: {epochs: 1}, score_epochs: 1}]"
    run_cli("run", config, out, "--methods", methods)
    printed = capsys.readouterr().out
    assert "for 3 epochs with collectors: tdds" in printed and "for 1 epochs with collectors: el2n-early" in printed
    costs = {name: json.loads((out / "costs" / f"score-{name}.json").read_text()) for name in ("tdds", "el2n-early")}
    assert costs["el2n-early"]["epochs"] == 1 and costs["tdds"]["epochs"] == 3
    assert 3 * costs["el2n-early"]["samples_forwarded"] == costs["tdds"]["samples_forwarded"]
    assert lp.Scores.load(out / "scores" / "el2n-early.npz").hparams["score_epochs"] == 1
    report = json.loads((out / "report.json").read_text())
    relative = {m: report["total_cost"][m]["0.50"]["relative"] for m in ("tdds", "el2n-early")}
    # one coreset epoch is one full-data training here: 1 + 0.5 against 3 + 0.5
    assert relative == {"el2n-early": pytest.approx(1.5, abs=0.01), "tdds": pytest.approx(3.5, abs=0.01)}
    # the same label with another scoring-run length would mix two set-ups: refused
    longer = methods.replace("score_epochs: 1", "score_epochs: 2")
    with pytest.raises(SystemExit):
        run_cli("run", config, out, "--methods", longer)
    assert "was made with other settings" in capsys.readouterr().err


def test_score_epochs_on_a_method_without_scores_is_refused(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    with pytest.raises(SystemExit):
        run_cli("run", config, tmp_path / "run", "--methods", "[{name: infobatch, score_epochs: 2}]")
    assert "only score-based methods read a scoring run" in capsys.readouterr().err


@pytest.mark.slow
def test_a_validated_selection_keeps_the_candidate_best_on_validation(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    method = "[{name: dual, label: rec, args: {epochs: 2, window: 2}, strategy: auto, select_args: {validate: true}}]"
    run_cli("run", config, out, "--methods", method)
    selection = lp.Selection.load(out / "selections" / "rec-r0.50.npz")
    validated = selection.hparams["validated"]
    assert set(validated["val_acc"]) == {"dual", "ccs", "easy", "random", "topk", "class_balanced"}
    assert validated["val_acc"][validated["chosen"]] == max(validated["val_acc"].values())
    assert "validation accuracy ccs" in capsys.readouterr().out
    # the six candidate trainings (each on half the data for one epoch) are charged to the method
    cost = json.loads((out / "costs" / "select-rec-r0.50.json").read_text())
    assert cost["samples_forwarded"] == 6 * len(selection)
    report = json.loads((out / "report.json").read_text())
    assert report["total_cost"]["rec"]["0.50"]["relative"] == pytest.approx(3 + 3 + 0.5, abs=0.01)


def test_validate_without_the_auto_strategy_is_refused(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    with pytest.raises(SystemExit):
        run_cli("run", config, tmp_path / "run", "--methods", "[{name: el2n, select_args: {validate: true}}]")
    assert "set `strategy: auto`" in capsys.readouterr().err


@pytest.mark.slow
def test_where_validation_keeps_random_the_method_trains_on_the_random_baseline(tmp_path, monkeypatch):
    from lightning_prune.pipeline import validated

    monkeypatch.setattr(
        validated, "validation_accuracy", lambda run, selection, label: (0.5, {"samples_forwarded": 0, "seconds": 0.0})
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    method = "[{name: dual, label: rec, args: {epochs: 2, window: 2}, strategy: auto, select_args: {validate: true}}]"
    run_cli("run", config, out, "--methods", method, "--seeds", "[0, 1]")
    assert lp.Selection.load(out / "selections" / "rec-r0.50.npz").hparams["validated"]["chosen"] == "random"
    for seed in (0, 1):  # every candidate tied: random pruning, on the baseline's own subsets
        rec = json.loads((out / "cells" / f"rec-r0.50-s{seed}.json").read_text())
        baseline = json.loads((out / "cells" / f"random-r0.50-s{seed}.json").read_text())
        assert rec["test_acc"] == baseline["test_acc"] and rec["num_train"] == baseline["num_train"]
