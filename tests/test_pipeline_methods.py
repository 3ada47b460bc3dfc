"""Methods reach the pipeline through one protocol: a new kind of method needs no change to the runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import TINY, run_cli

import lightning_prune as lp
from lightning_prune.pipeline.methods import LEARNED, AdaPrunerMethod, InfluenceMethod, ScoreBased, method_for


class LowestIndices:
    """A learned method for the test: keeps the lowest indices."""

    uses_scores = False
    needs_scoring_model = False

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
