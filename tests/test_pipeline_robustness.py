"""The pipeline under faults and first-use mistakes: damaged files, concurrent runs, signals, settings."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import TINY, run_cli

import lightning_prune as lp
from lightning_prune.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _fails(capsys, argv: list[str], message: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err, err
    return err


def test_one_collector_twice_under_two_labels_gets_two_state_keys(tmp_path, tiny_config):
    out = tmp_path / "run"
    run_cli(
        "score",
        tiny_config,
        out,
        "--methods",
        "[{name: el2n, args: {epochs: 2}}, {name: el2n, label: el2n-ccs, args: {epochs: 2}, strategy: ccs}]",
    )
    assert {p.name for p in (out / "scores").iterdir()} == {
        "el2n.npz",
        "el2n-ccs.npz",
        # EL2N records predictions: each label gets its list of likely mislabelled samples
        "el2n.mislabelled.json",
        "el2n-ccs.mislabelled.json",
    }


@pytest.mark.slow
def test_a_damaged_cell_is_trained_again(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    run_cli("run", tiny_config, out)
    cell = out / "cells" / "tdds-r0.50-s0.json"
    cell.write_text('{"method": "td')  # a kill -9 during a non-atomic copy, a full disk...
    capsys.readouterr()
    run_cli("run", tiny_config, out)
    printed = capsys.readouterr().out
    assert "unreadable" in printed and "tdds-r0.50-s0.json" in printed
    assert json.loads(cell.read_text())["method"] == "tdds"


def test_an_unreadable_run_json_is_named(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    run_cli("select", tiny_config, out)
    (out / "run.json").write_text("{not json")
    _fails(capsys, ["run", "--config", str(tiny_config), "--output_dir", str(out)], str(out / "run.json"))


def test_a_second_run_on_the_same_directory_is_refused_while_the_first_holds_it(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's run
        _fails(capsys, ["run", "--config", str(tiny_config), "--output_dir", str(out)], "is in use by another")
    run_cli("select", tiny_config, out)  # released: runs


@pytest.mark.slow
def test_sigterm_exits_143_and_says_how_to_resume(tmp_path, tiny_config):
    out = tmp_path / "run"
    script = (
        "import os, signal, sys\n"
        "from lightning_prune.cli import main\n"
        "import lightning.pytorch as pl\n"
        "class Term(pl.Callback):\n"
        "    def on_train_epoch_start(self, trainer, pl_module):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "import lightning_prune.pipeline.runner as runner\n"
        "original = runner.PruningRun.make_trainer\n"
        "runner.PruningRun.make_trainer = lambda self, e, callbacks=None, **kw: original(self, e, [*(callbacks or []), Term()], **kw)\n"
        f"main(['run', '--config', {str(tiny_config)!r}, '--output_dir', {str(out)!r}])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
    assert "re-run the same command to resume" in result.stderr


def test_display_only_trainer_settings_do_not_block_a_resume(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    run_cli("select", tiny_config, out)
    run_cli(
        "select",
        tiny_config,
        out,
        "--trainer",
        "{enable_progress_bar: true, enable_model_summary: true, log_every_n_steps: 5}",
    )
    assert "Resuming" in capsys.readouterr().out


def test_a_refused_resume_names_the_setting_and_both_values(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    run_cli("select", tiny_config, out)
    _fails(
        capsys,
        ["run", "--config", str(tiny_config), "--output_dir", str(out), "--score_epochs", "4"],
        "score_epochs: 3 -> 4",
    )


def test_a_run_that_crashed_on_a_bad_setting_does_not_lock_its_directory(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        run_cli("select", tiny_config, out, "--trainer", "{not_a_trainer_argument: 1}")
    capsys.readouterr()
    run_cli("select", tiny_config, out)  # the corrected config runs
    assert (out / "selections" / "tdds-r0.50.npz").exists()


def test_adding_a_seed_in_front_keeps_every_finished_artefact(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    run_cli("select", tiny_config, out)
    stamp = (out / "selections" / "tdds-r0.50.npz").stat().st_mtime_ns
    run_cli("select", tiny_config, out, "--seeds", "[5, 0]")
    assert (out / "selections" / "tdds-r0.50.npz").stat().st_mtime_ns == stamp
    assert (out / "selections" / "random-r0.50-s5.npz").exists()
    assert lp.Selection.load(out / "selections" / "tdds-r0.50.npz").hparams["run_settings"]["seed"] == 0


def test_trainer_callbacks_and_a_logger_by_class_path_log_under_the_run_directory(tmp_path, tiny_config):
    out = tmp_path / "run"
    trainer = (
        "{callbacks: [{class_path: lightning.pytorch.callbacks.LearningRateMonitor}], "
        "logger: {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: " + str(out / "csv") + "}}}"
    )
    run_cli("score", tiny_config, out, "--trainer", trainer)
    assert list((out / "csv").rglob("metrics.csv"))


def test_logger_true_writes_under_the_run_directory(tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    run_cli("score", tiny_config, out, "--trainer", "{logger: true}")
    assert not (tmp_path / "lightning_logs").exists()
    assert list((out / "logs").rglob("*"))


def test_user_errors_end_in_one_line_and_debug_shows_the_traceback(tmp_path, tiny_config, capsys):
    err = _fails(
        capsys,
        ["run", "--config", str(tiny_config), "--output_dir", str(tmp_path / "x"), "--prune_ratios", "[1.5]"],
        "strictly between 0 and 1",
    )
    assert len([line for line in err.splitlines() if line.strip()]) <= 2
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        main(
            [
                "run",
                "--debug",
                "--config",
                str(tiny_config),
                "--output_dir",
                str(tmp_path / "x"),
                "--prune_ratios",
                "[1.5]",
            ]
        )


def test_only_rank_zero_prints(tmp_path, tiny_config, capsys, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    run_cli("select", tiny_config, tmp_path / "run")
    assert capsys.readouterr().out == ""


def test_bad_seeds_are_named(tmp_path, tiny_config, capsys):
    _fails(
        capsys, ["run", "--config", str(tiny_config), "--output_dir", str(tmp_path / "x"), "--seeds", "[-1]"], "seed=-1"
    )


def test_temp_files_left_by_a_kill_are_cleaned(tmp_path, tiny_config):
    out = tmp_path / "run"
    run_cli("select", tiny_config, out)
    stale = out / "selections" / ".tdds-r0.50.npz.abc123.tmp"
    stale.write_bytes(b"half")
    run_cli("select", tiny_config, out)
    assert not stale.exists()
