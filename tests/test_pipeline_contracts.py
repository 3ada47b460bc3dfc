"""The pipeline's contracts: a narrow seam for methods, settings refused before anything trains, artefacts
that carry the identity they were made under, cost files that cannot be silently wrong, a resumable scoring run."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import TINY, run_cli

import lightning_prune as lp
from lightning_prune.cli import main

PIPELINE = Path(__file__).resolve().parents[1] / "lightning_prune" / "pipeline"


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _refused(capsys, config: Path, out: Path, *extra: str, command: str = "run") -> str:
    """The command fails with one line (no traceback) and trains nothing; returns what it printed."""
    with pytest.raises(SystemExit) as stop:
        main([command, "--config", str(config), "--output_dir", str(out), *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    for folder in ("scores", "cells", "checkpoints"):
        assert not (out / folder).exists() or not list((out / folder).iterdir()), f"{folder} written: {err}"
    return err


# ---------------------------------------------------------------------------------------------- the seam
def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("module", ["methods.py", "validated.py", "context.py"])
def test_methods_do_not_import_the_runner(module):
    """Methods see the run through RunContext only: no import (not even for type checking) of the runner."""
    assert "lightning_prune.pipeline.runner" not in _imported_modules(PIPELINE / module)


def test_validated_does_not_import_methods():
    assert "lightning_prune.pipeline.methods" not in _imported_modules(PIPELINE / "validated.py")


def _string_parts(path: Path) -> list[str]:
    return [
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


@pytest.mark.parametrize("prefix", ["select-", "score-"])
def test_cost_names_are_spelled_once(prefix):
    spelled = {
        path.name for path in PIPELINE.glob("*.py") if any(part.startswith(prefix) for part in _string_parts(path))
    }
    assert spelled == {"names.py"}


def test_no_pipeline_code_special_cases_the_reference_classifier():
    for path in PIPELINE.glob("*.py"):
        assert "Classifier" not in {
            node.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Name)
        }, path.name


def test_registries_say_what_they_hold():
    from lightning_prune.pipeline import methods

    assert not hasattr(methods, "LEARNED")
    assert set(methods.SELECTING_METHODS) == {"adapruner", "influence"}
    assert set(methods.DYNAMIC_METHODS) == {"infobatch", "seta"}
    assert all(method.makes_selection for method in methods.SELECTING_METHODS.values())
    assert not any(method.makes_selection for method in methods.DYNAMIC_METHODS.values())


def test_a_new_selecting_method_is_registered_without_editing_a_dispatch(tmp_path, tiny_config, monkeypatch):
    from lightning_prune.pipeline.methods import SELECTING_METHODS, SelectionMethod

    class LowestIndices(SelectionMethod):
        def selection(self, run, spec, ratio):
            num_samples, labels = run.training_set_facts()
            fingerprint = lp.Scores(values=np.zeros(num_samples), method="x", labels=labels).label_fingerprint
            keep = num_samples - round(ratio * num_samples)
            return lp.Selection(np.arange(keep), num_samples, method=spec.key, label_fingerprint=fingerprint)

    monkeypatch.setitem(SELECTING_METHODS, "lowest", LowestIndices())
    out = tmp_path / "run"
    run_cli("select", tiny_config, out, "--methods", "[{name: lowest}]")
    selection = lp.Selection.load(out / "selections" / "lowest-r0.50.npz")
    assert selection.indices.tolist() == list(range(len(selection)))


# ------------------------------------------------------------------------------- settings, before training
def test_a_select_args_typo_is_refused_before_the_scoring_run(tmp_path, tiny_config, capsys):
    err = _refused(capsys, tiny_config, tmp_path / "run", "--methods", "[{name: el2n, select_args: {ccs_bin: 2}}]")
    assert "ccs_bin" in err


def test_a_select_args_typo_with_validate_is_refused_before_the_scoring_run(tmp_path, tiny_config, capsys):
    method = "[{name: el2n, strategy: auto, select_args: {validate: true, ccs_bin: 2}}]"
    err = _refused(capsys, tiny_config, tmp_path / "run", "--methods", method)
    assert "ccs_bin" in err


def test_validate_must_be_true_or_false(tmp_path, tiny_config, capsys):
    method = "[{name: el2n, strategy: auto, select_args: {validate: sometimes}}]"
    err = _refused(capsys, tiny_config, tmp_path / "run", "--methods", method)
    assert "validate" in err and "true or false" in err


def test_validate_false_selects_as_without_it(tmp_path, tiny_config):
    out = tmp_path / "run"
    methods = "[{name: el2n, args: {epochs: 1}, select_args: {validate: false}}]"
    run_cli("select", tiny_config, out, "--methods", methods, "--score_epochs", "1")
    selection = lp.Selection.load(out / "selections" / "el2n-r0.50.npz")
    expected = lp.select(lp.Scores.load(out / "scores" / "el2n.npz"), 0.5, strategy="topk")
    np.testing.assert_array_equal(selection.indices, expected.indices)


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("{name: infobatch, strategy: ccs}", "strategy"),
        ("{name: infobatch, select_args: {ccs_beta: 0.1}}", "select_args"),
        ("{name: infobatch, args: {prune_ratio: 0.3}}", "prune_ratio"),
        ("{name: infobatch, args: {seed: 3}}", "seed"),
    ],
)
def test_settings_infobatch_does_not_read_are_refused(tmp_path, tiny_config, capsys, method, message):
    err = _refused(capsys, tiny_config, tmp_path / "run", "--methods", f"[{method}]")
    assert message in err and "infobatch" in err and "multiple values" not in err


@pytest.mark.parametrize("label", ["../../x", "a/b", "", ".hidden", "x y"])
def test_labels_that_are_not_plain_names_are_refused(tmp_path, tiny_config, capsys, label):
    err = _refused(capsys, tiny_config, tmp_path / "run", "--methods", f"[{{name: el2n, label: {json.dumps(label)}}}]")
    assert "letters, digits" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key", ["max_epochs", "max_steps", "min_epochs"])
def test_trainer_settings_the_pipeline_sets_are_refused(tmp_path, tiny_config, capsys, key):
    err = _refused(capsys, tiny_config, tmp_path / "run", "--trainer", f"{{{key}: 2}}")
    assert f"trainer.{key}" in err and "train_epochs" in err


def test_a_model_with_fewer_classes_than_the_data_is_refused_and_leaves_the_directory_usable(
    tmp_path, tiny_config, capsys
):
    out = tmp_path / "run"
    config = tmp_path / "five.yaml"
    config.write_text(TINY.replace("num_classes: 10", "num_classes: 5"))
    err = _refused(capsys, config, out, command="select")
    assert "num_classes" in err and "10" in err and "5" in err
    run_cli("select", tiny_config, out, "--methods", "[{name: el2n, args: {epochs: 1}}]", "--score_epochs", "1")
    assert (out / "selections" / "el2n-r0.50.npz").exists()


class PercentClassifier(lp.models.Classifier):
    """Logs the test accuracy in percent, which the report would read as a fraction."""

    def test_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        self.log("test_acc", 100.0 * (self(x).argmax(-1) == y).float().mean(), on_epoch=True)


def test_a_test_accuracy_outside_zero_one_is_refused_not_written(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    config = tmp_path / "percent.yaml"
    config.write_text(TINY.replace("lightning_prune.models.Classifier", f"{__name__}.PercentClassifier"))
    with pytest.raises(SystemExit):
        run_cli("run", config, out, "--methods", "[{name: el2n, args: {epochs: 1}}]", "--score_epochs", "1")
    assert "outside [0, 1]" in capsys.readouterr().err
    assert not (out / "cells").exists() or not list((out / "cells").iterdir())


# --------------------------------------------------------------------------------------------- cost files
@pytest.fixture
def selected(tmp_path, tiny_config) -> Path:
    out = tmp_path / "run"
    run_cli("select", tiny_config, out, "--methods", "[{name: el2n, args: {epochs: 1}}]", "--score_epochs", "1")
    return out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (None, "is missing"),
        ('{"samples_fo', "unreadable"),
        ('{"samples_forwarded": -1200, "epochs": 1, "seconds": 0.1}', "negative"),
    ],
    ids=["missing", "truncated", "negative"],
)
def test_a_bad_cost_file_is_named_with_how_to_redo_it(selected, tiny_config, capsys, damage, message):
    cost = selected / "costs" / "score-el2n.json"
    if damage is None:
        cost.unlink()
    else:
        cost.write_text(damage)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli("run", tiny_config, selected, "--methods", "[{name: el2n, args: {epochs: 1}}]", "--score_epochs", "1")
    err = capsys.readouterr().err
    assert str(cost) in err and message in err and str(selected / "scores" / "el2n.npz") in err
    assert not (selected / "cells").exists()  # refused before the coreset trainings, not at the report


# ---------------------------------------------------------------------------------------- cell identity
@pytest.mark.slow
def test_cells_made_under_other_settings_are_refused_after_run_json_was_deleted(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    args = ("--methods", "[{name: el2n, args: {epochs: 1}}]", "--score_epochs", "1")
    run_cli("run", tiny_config, out, *args)
    cell = json.loads((out / "cells" / "el2n-r0.50-s0.json").read_text())
    assert cell["made_under"]["run"]["train_epochs"] == 1
    (out / "run.json").unlink()  # as the message for a damaged run.json advises
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli("run", tiny_config, out, *args, "--train_epochs", "2")
    err = capsys.readouterr().err
    assert "train_epochs: 1 -> 2" in err and "cells" in err


def test_scores_and_selections_made_under_other_settings_are_refused_after_run_json_was_deleted(
    tmp_path, tiny_config, capsys
):
    out = tmp_path / "run"
    args = ("--methods", "[{name: el2n, args: {epochs: 1}}]", "--score_epochs", "1")
    run_cli("select", tiny_config, out, *args)
    (out / "run.json").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli("select", tiny_config, out, *args, "--score_seed", "1")
    err = capsys.readouterr().err
    assert str(out / "scores" / "el2n.npz") in err and "score_seed: 0 -> 1" in err
    (out / "scores" / "el2n.npz").unlink()  # as the message advises: the selection is next
    with pytest.raises(SystemExit):
        run_cli("select", tiny_config, out, *args, "--score_seed", "1")
    err = capsys.readouterr().err
    assert str(out / "selections" / "el2n-r0.50.npz") in err and "score_seed: 0 -> 1" in err


# ---------------------------------------------------------------------------------- scoring-run resume
class _FaultAfterEpoch:
    """Wraps ``PruningRun.make_trainer`` so that the scoring run fails at the start of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def install(self, monkeypatch) -> None:
        import lightning.pytorch as pl

        from lightning_prune.pipeline import runner

        original = runner.PruningRun.make_trainer
        epoch = self.epoch

        class Fault(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                if trainer.current_epoch == epoch:
                    raise RuntimeError("simulated fault")  # a crash, a preemption, a lost node

        def make_trainer(run, max_epochs, callbacks=None, progress=None, **overrides):
            extra = [Fault()] if progress == "[score]" else []
            return original(run, max_epochs, [*(callbacks or []), *extra], progress=progress, **overrides)

        monkeypatch.setattr(runner.PruningRun, "make_trainer", make_trainer)


def test_an_interrupted_scoring_run_resumes_from_its_checkpoint(tmp_path, tiny_config, capsys, monkeypatch):
    methods = "[{name: tdds, args: {trajectory: 3, window: 3}}, {name: el2n, args: {epochs: 2}}]"
    reference = tmp_path / "reference"
    run_cli("score", tiny_config, reference, "--methods", methods)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _FaultAfterEpoch(2).install(patch)
        with pytest.raises(RuntimeError, match="simulated fault"):
            run_cli("score", tiny_config, out, "--methods", methods)
    assert not (out / "scores").exists() or not list((out / "scores").iterdir())
    assert list((out / "checkpoints").rglob("*.ckpt"))
    capsys.readouterr()

    run_cli("score", tiny_config, out, "--methods", methods)
    assert "resuming the scoring run from epoch 2 of 3" in capsys.readouterr().out
    for name in ("tdds", "el2n"):
        np.testing.assert_array_equal(
            lp.Scores.load(out / "scores" / f"{name}.npz").values,
            lp.Scores.load(reference / "scores" / f"{name}.npz").values,
        )
        resumed_cost = json.loads((out / "costs" / f"score-{name}.json").read_text())
        reference_cost = json.loads((reference / "costs" / f"score-{name}.json").read_text())
        assert resumed_cost["samples_forwarded"] == reference_cost["samples_forwarded"]
        assert resumed_cost["epochs"] == reference_cost["epochs"] == 3
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").rglob("*.ckpt"))


def test_a_scoring_checkpoint_of_other_collectors_is_not_resumed(tmp_path, tiny_config, capsys, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _FaultAfterEpoch(2).install(patch)
        with pytest.raises(RuntimeError, match="simulated fault"):
            run_cli("score", tiny_config, out, "--methods", "[{name: el2n, args: {epochs: 2}}]")
    capsys.readouterr()
    # another collector joins: its state is not in the checkpoint, so the run starts over rather than
    # giving it a history it never saw
    run_cli("score", tiny_config, out, "--methods", "[{name: el2n, args: {epochs: 2}}, {name: forgetting}]")
    printed = capsys.readouterr().out
    assert "resuming" not in printed and "starting over" in printed
    assert (out / "scores" / "forgetting.npz").exists()


# ------------------------------------------------------------------------------------------ DDP testing
@pytest.mark.slow
def test_under_ddp_every_test_sample_is_counted_once_and_lightning_does_not_warn(tmp_path, tiny_config):
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    script = tmp_path / "pipeline_ddp.py"  # Lightning's DDP launcher re-runs this script for rank 1
    script.write_text(
        "from lightning_prune.cli import main\n"
        f"main(['run', '--config', {str(tiny_config)!r}, '--output_dir', {str(out)!r}, "
        "'--methods', '[{name: el2n, args: {epochs: 1}}]', '--score_epochs', '1', "
        "'--trainer', '{accelerator: cpu, devices: 2, strategy: ddp}'])\n"
    )
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Using `DistributedSampler`" not in result.stderr
    test_size = 449  # odd: a DistributedSampler over 2 ranks would count one test sample twice (k / 450)
    data = lp.DigitsDataModule()
    data.setup("test")
    assert len(data.test_dataset) == test_size
    for cell in (out / "cells").iterdir():
        correct = json.loads(cell.read_text())["test_acc"] * test_size
        assert correct == pytest.approx(round(correct), abs=1e-3), cell.name
