"""Methods reach the pipeline through one protocol: a new kind of method needs no change to the runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import TINY, run_cli

import lightning_prune as lp
from lightning_prune.pipeline.methods import (
    LEARNED,
    AdaPrunerMethod,
    InfluenceMethod,
    ScoreBased,
    SelectionMethod,
    method_for,
)


class LowestIndices(SelectionMethod):
    """A learned method for the test: keeps the lowest indices."""

    def collector(self, spec):
        return None

    def cost_names(self, spec, ratio):
        return []  # selecting costs no training

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
    monkeypatch.setitem(LEARNED, "lowest", LowestIndices())
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
    # epoch 0 has no losses yet and epoch 3 is annealed (floor(0.875 * 4) = 3): epochs 1 and 2 skip samples
    assert 0 < cell["prune_ratio_reached"] < 0.5 * 2 / 4
    assert cell["train_samples_forwarded"] == round((1 - cell["prune_ratio_reached"]) * full["train_samples_forwarded"])
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["total_cost"]["infobatch"]["0.50"]["relative"] < 1  # no scoring run to pay for
    assert "infobatch (dynamic) at prune 50% skipped" in capsys.readouterr().out


def test_a_ratio_infobatch_cannot_run_is_refused_before_training(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    with pytest.raises(SystemExit):
        run_cli("run", config, tmp_path / "run", "--methods", "[{name: infobatch}]", "--prune_ratios", "[0.95]")
    assert not (tmp_path / "run" / "cells").exists()
