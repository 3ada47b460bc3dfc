"""Dynamic methods in the pipeline: rows given as target savings, a dynamic method on top of a static
selection (the cost table charges both), and the settings refused before anything trains."""

from __future__ import annotations

import json
import re

import pytest
from test_cli import TINY, run_cli

import lightning_prune as lp


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_a_dynamic_row_given_as_a_target_saving_reaches_it_and_the_table_says_so(tmp_path, config, capsys):
    out = tmp_path / "run"
    methods = "[{name: infobatch, target_saving: true}]"
    run_cli("run", config, out, "--methods", methods, "--prune_ratios", "[0.3]", "--train_epochs", "4")
    cell = json.loads((out / "cells" / "infobatch-r0.30-s0.json").read_text())
    full = json.loads((out / "cells" / "full-r0.00-s0.json").read_text())
    assert cell["dynamic"] is True and cell["ratio_is"] == "target_saving"
    assert cell["fraction_skipped"] == pytest.approx(0.3, abs=0.01)
    assert cell["train_samples_forwarded"] == pytest.approx(0.7 * full["train_samples_forwarded"], rel=0.02)
    assert cell["made_under"]["method"]["target_saving"] is True
    printed = capsys.readouterr().out
    assert "infobatch (target saving)" in printed
    assert "infobatch (dynamic) at" not in printed  # on target: no note


@pytest.mark.slow
def test_a_static_method_trains_its_coreset_with_a_dynamic_method_and_pays_for_both(tmp_path, config, capsys):
    out = tmp_path / "run"
    methods = (
        "[{name: el2n, args: {epochs: 1}, score_epochs: 1, dynamic: {name: rs2, args: {target_saving: 0.5}}},"
        " {name: el2n, label: el2n-ib, args: {epochs: 1}, score_epochs: 1,"
        "  dynamic: {name: infobatch, args: {target_saving: 0.25}}}]"
    )
    run_cli("run", config, out, "--methods", methods, "--prune_ratios", "[0.5]", "--train_epochs", "4")
    full = json.loads((out / "cells" / "full-r0.00-s0.json").read_text())
    digits = lp.DigitsDataModule()
    digits.setup("fit")
    for key, name, skipped in (("el2n", "rs2", 0.5), ("el2n-ib", "infobatch", 0.25)):
        cell = json.loads((out / "cells" / f"{key}-r0.50-s0.json").read_text())
        assert cell["dynamic_on_top"] == name and "dynamic" not in cell
        assert cell["num_train"] == round(0.5 * len(digits.train_dataset))  # the static selection: half the samples
        assert cell["dynamic_fraction_skipped"] == pytest.approx(skipped, abs=0.01)
        # the metered training forwarded the coreset's epochs less what the dynamic method skipped
        forwarded = 0.5 * (1 - skipped) * full["train_samples_forwarded"]
        assert cell["train_samples_forwarded"] == pytest.approx(forwarded, rel=0.02)
        assert cell["made_under"]["method"]["dynamic"]["name"] == name
    report = json.loads((out / "report.json").read_text())
    # scoring: 1 full epoch of 4 (0.25), plus the pruned coreset training
    assert report["total_cost"]["el2n"]["0.50"]["relative"] == pytest.approx(0.25 + 0.25, abs=0.01)
    assert report["total_cost"]["el2n-ib"]["0.50"]["relative"] == pytest.approx(0.25 + 0.375, abs=0.01)
    printed = capsys.readouterr().out
    assert "el2n (+ rs2)" in printed and "el2n-ib (+ infobatch)" in printed
    assert re.search(r"trains its coreset with rs2, which skipped 50\.\d%.*: 75\.\d% of the full data's", printed)


@pytest.mark.parametrize(
    ("methods", "extra", "message"),
    [
        ("[{name: el2n, target_saving: true}]", [], "sets target_saving, but it is static"),
        ("[{name: infobatch, dynamic: {name: rs2}}]", [], "is dynamic already"),
        ("[{name: el2n, dynamic: {name: rs2}}]", ["--budget", "steps"], "under budget: steps"),
        ("[{name: el2n, dynamic: {name: dropout}}]", [], r"dynamic.name='dropout' is not one of"),
        ("[{name: el2n, dynamic: {args: {}}}]", [], "must be a mapping"),
        ("[{name: el2n, dynamic: {name: rs2, args: {seed: 3}}}]", [], "sets seed, which the run sets"),
        ("[{name: el2n, dynamic: {name: infobatch, args: {target_saving: 1.5}}}]", [], r"target_saving=1.5"),
        ("[{name: infobatch, args: {target_saving: 0.3}}]", [], "`target_saving: true`"),
        ("[{name: seta, target_saving: true}]", ["--prune_ratios", "[1.0]"], "prune_ratio"),
    ],
)
def test_bad_dynamic_settings_are_refused_before_training(tmp_path, config, capsys, methods, extra, message):
    with pytest.raises(SystemExit):
        run_cli("run", config, tmp_path / "run", "--methods", methods, *extra)
    assert not (tmp_path / "run" / "cells").exists()
    assert re.search(message, capsys.readouterr().err)
