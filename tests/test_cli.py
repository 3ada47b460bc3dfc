"""The `lightning-prune` command: the pipeline end to end, resume, and LightningCLI's fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import lightning_prune as lp
from lightning_prune.cli import build_pipeline_parser, default_config_path, main

TINY = """
name: tiny
data:
  class_path: lightning_prune.data.DigitsDataModule
  init_args: {batch_size: 256}
model:
  class_path: lightning_prune.models.Classifier
  init_args:
    backbone:
      class_path: lightning_prune.models.SmallCNN
      init_args: {num_classes: 10, width: 4}
    lr: 0.1
    weighted_loss: mean  # what InfoBatch rows need; the same for unweighted batches
methods:
  - name: tdds
    args: {trajectory: 3, window: 3}
  - name: forgetting
    strategy: class_balanced
prune_ratios: [0.5]
seeds: [0]
score_epochs: 3
train_epochs: 1
budget_baselines: false  # the equal-cost rows are tested in test_budget.py; here they would only add trainings
"""


def run_cli(command: str, config: Path, out: Path, *extra: str) -> None:
    """``lightning-prune COMMAND --config CONFIG --output_dir OUT EXTRA...``, in process."""
    main([command, "--config", str(config), "--output_dir", str(out), *extra])


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.mark.slow
def test_run_scores_selects_trains_reports_and_resumes(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    run_cli("run", tiny_config, out)
    printed = capsys.readouterr().out
    assert "[score]" in printed and "[train 4/4]" in printed and "prune 50%" in printed

    report = json.loads((out / "report.json").read_text())
    assert set(report["test_accuracy"]) == {"full", "tdds", "forgetting", "random"}
    assert len(report["cells"]) == 4 and all(0.0 <= c["test_acc"] <= 1.0 for c in report["cells"])
    assert (out / "plots" / "accuracy_vs_prune_ratio.png").stat().st_size > 1000
    assert (out / "plots" / "score_histograms.png").stat().st_size > 1000

    scores = lp.Scores.load(out / "scores" / "tdds.npz")
    selection = lp.Selection.load(out / "selections" / "tdds-r0.50.npz")
    assert len(selection) == scores.num_samples - round(0.5 * scores.num_samples)
    np.testing.assert_array_equal(selection.indices, lp.select(scores, 0.5).indices)
    balanced = lp.Selection.load(out / "selections" / "forgetting-r0.50.npz")
    assert balanced.hparams["strategy"] == "class_balanced"

    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    run_cli("run", tiny_config, out)
    printed = capsys.readouterr().out
    assert "Resuming" in printed and "4 of 4 trainings already done" in printed and "[score] training" not in printed
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == stamps


def test_rerun_with_other_settings_in_the_same_directory_is_refused(tmp_path, tiny_config):
    out = tmp_path / "run"
    run_cli("select", tiny_config, out)
    assert sorted(p.name for p in (out / "selections").iterdir()) == [
        "forgetting-r0.50.npz",
        "random-r0.50-s0.npz",
        "tdds-r0.50.npz",
    ]
    assert not (out / "cells").exists()
    with pytest.raises(ValueError, match="other settings"):
        main(["run", "--debug", "--config", str(tiny_config), "--output_dir", str(out), "--score_epochs", "4"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--prune_ratios", "[1.5]"], "strictly between 0 and 1"),
        (["--methods", "[{name: nonsense}]"], "Unknown method 'nonsense'"),
        (["--strategy", "best"], "Unknown strategy 'best'"),
    ],
)
def test_bad_run_settings_get_clear_errors(tmp_path, tiny_config, override, message):
    with pytest.raises(ValueError, match=message):
        main(["run", "--debug", "--config", str(tiny_config), "--output_dir", str(tmp_path / "x"), *override])
    assert not (tmp_path / "x" / "cells").exists()


def test_default_study_is_the_example_and_parses():
    packaged = yaml.safe_load(default_config_path().read_text())
    example = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "digits.yaml").read_text())
    assert packaged == example
    config = build_pipeline_parser().parse_args(["--config", str(default_config_path())])
    assert config.name == "digits" and len(config.methods) >= 3


def test_lightning_fit_with_a_collector_from_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fit.yaml").write_text(f"""
trainer:
  max_epochs: 3
  logger: false
  enable_progress_bar: false
  enable_checkpointing: false
  callbacks:
    - class_path: lightning_prune.TDDS
      init_args: {{trajectory: 3, window: 3, save_path: {tmp_path / "tdds.npz"}}}
model:
  class_path: lightning_prune.models.Classifier
  init_args:
    backbone: {{class_path: lightning_prune.models.SmallCNN, init_args: {{width: 4}}}}
data:
  class_path: lightning_prune.data.DigitsDataModule
""")
    main(["fit", "--config", str(tmp_path / "fit.yaml")])
    scores = lp.Scores.load(tmp_path / "tdds.npz")
    assert scores.method == "tdds" and scores.num_samples == len(lp.DigitsDataModule().train_dataset)


def test_usage_lists_every_command(capsys):
    main([])
    printed = capsys.readouterr().out
    for command in ("run", "score", "select", "fit", "validate", "test"):
        assert f"  {command}" in printed
    with pytest.raises(SystemExit, match="unknown command 'frobnicate'"):
        main(["frobnicate"])


@pytest.mark.parametrize("name", ["digits.yaml", "cifar10.yaml", "cifar100.yaml"])
def test_example_configs_build_a_valid_run(name, tmp_path):
    from lightning_prune.cli import make_run

    parser = build_pipeline_parser()
    config = parser.parse_args(
        ["--config", str(Path(__file__).resolve().parents[1] / "examples" / name), "--output_dir", str(tmp_path)]
    )
    run = make_run(parser, config, log=lambda line: None)  # validates methods, strategies and ratios
    assert run.cells() and all(0 < r < 1 for r in run.all_ratios)
    if name == "cifar100.yaml":  # per-ratio TDDS settings run at their own ratio only
        assert ("tdds-T10-K5", 0.9, 0) in run.cells() and ("tdds-T10-K5", 0.3, 0) not in run.cells()


def test_adapruner_is_a_method_of_the_pipeline(tmp_path, tiny_config):
    out = tmp_path / "run"
    run_cli("select", tiny_config, out, "--methods", "[{name: adapruner, args: {epochs: 3, alpha: [0.1, 5.0]}}]")
    selection = lp.Selection.load(out / "selections" / "adapruner-r0.50.npz")
    assert selection.method == "adapruner" and selection.num_samples == 1078
    assert selection.hparams["keep_ratio"] == pytest.approx(0.5)  # the target it was given...
    assert selection.hparams["prune_ratio_reached"] == pytest.approx(
        1 - len(selection) / 1078
    )  # ...and what it reached


@pytest.mark.slow
def test_influence_is_a_method_of_the_pipeline(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    run_cli(
        "select",
        tiny_config,
        out,
        "--prune_ratios",
        "[0.3, 0.5]",
        "--methods",
        "[{name: influence, args: {damping: 0.001, time_limit: 20}}]",
    )
    printed = capsys.readouterr().out
    assert printed.count("last-layer influence of every training sample") == 1  # once for both ratios
    for ratio, kept in ((0.3, 1078 - round(0.3 * 1078)), (0.5, 539)):
        selection = lp.Selection.load(out / "selections" / f"influence-r{ratio:.2f}.npz")
        assert selection.method == "influence" and len(selection) == kept
        assert selection.hparams["objective"] >= 0


@pytest.mark.parametrize(
    "override",
    [
        ["--methods", "[{name: tdds, args: {trajectory: 3, window: 3, decay: 0.5}}]"],
        ["--methods", "[{name: tdds, args: {trajectory: 3, window: 3}, strategy: random}]"],
    ],
    ids=["collector-args", "strategy"],
)
def test_resuming_with_changed_method_settings_is_refused(tmp_path, tiny_config, override):
    out = tmp_path / "run"
    run_cli("select", tiny_config, out)
    with pytest.raises(ValueError, match="other settings than method 'tdds'.*new `label:`"):
        main(["select", "--debug", "--config", str(tiny_config), "--output_dir", str(out), *override])


def test_close_ratios_get_distinct_files_and_report_keys():
    from lightning_prune.pipeline.names import ratio_label, ratio_tag

    assert ratio_tag(0.5) == "r0.50" and ratio_tag(0.99) == "r0.99" and ratio_tag(0.995) == "r0.995"
    assert len({ratio_label(r) for r in (0.3, 0.99, 0.995, 0.999)}) == 4


@pytest.mark.slow
def test_weighted_run_trains_learned_selections_unweighted(tmp_path, tiny_config):
    out = tmp_path / "run"
    run_cli(
        "run",
        tiny_config,
        out,
        "--weighted",
        "true",
        "--methods",
        "[{name: tdds, args: {trajectory: 3, window: 3}}, {name: influence, args: {damping: 0.001}}]",
    )
    assert lp.Selection.load(out / "selections" / "tdds-r0.50.npz").weights is not None
    assert lp.Selection.load(out / "selections" / "influence-r0.50.npz").weights is None
    report = json.loads((out / "report.json").read_text())
    assert set(report["test_accuracy"]) == {"full", "tdds", "influence", "random"}
