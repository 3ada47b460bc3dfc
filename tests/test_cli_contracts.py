"""What the `lightning-prune` command promises a user: exact options, truthful help, one-line errors
and a resumable, clearly reported interruption."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from test_cli import TINY

from lightning_prune.cli import LIGHTNING_COMMANDS, PIPELINE_COMMANDS, build_pipeline_parser, main
from lightning_prune.pipeline.methods import known_methods
from lightning_prune.selection.strategies import STRATEGIES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> str:
    """``main(argv)`` exits 2 with one line on stderr, containing ``message`` and no traceback."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and message in err, err
    assert len(lines) == 1, err
    return err


def _help(command: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code in (0, None)
    return out.getvalue()


# ---------------------------------------------------------------- abbreviations
@pytest.mark.parametrize("command", sorted(PIPELINE_COMMANDS))
def test_a_prefix_of_an_option_is_refused_not_expanded(command, tmp_path, tiny_config, capsys):
    # `--train_epoch 3` once ran a whole study as `--train_epochs 3`
    argv = [command, "--config", str(tiny_config), "--output_dir", str(tmp_path / "x"), "--train_epoch", "3"]
    err = _fails(capsys, argv, "--train_epoch")
    assert "unrecognized" in err.lower()  # jsonargparse 4.27 wrote "Unrecognized"
    assert not (tmp_path / "x").exists()


def test_every_pipeline_parser_refuses_abbreviations():
    for command in PIPELINE_COMMANDS:
        assert build_pipeline_parser(command).allow_abbrev is False


@pytest.mark.parametrize("command", LIGHTNING_COMMANDS)
def test_lightning_commands_refuse_a_prefix_of_an_option(command, capsys):
    # `--trainer.max_epoch` is a prefix of `--trainer.max_epochs` (and of nothing else)
    argv = [
        command,
        "--model",
        "lightning_prune.Classifier",
        "--model.backbone",
        "lightning_prune.SmallCNN",
        "--data",
        "lightning_prune.DigitsDataModule",
        "--trainer.max_epoch",
        "1",
    ]
    err = _fails(capsys, argv, "--trainer.max_epoch")
    assert "unrecognized" in err.lower()  # jsonargparse 4.27 wrote "Unrecognized"


# ---------------------------------------------------------------- help
@pytest.mark.parametrize("command", sorted(PIPELINE_COMMANDS))
def test_help_lists_every_registered_strategy_and_method(command):
    text = " ".join(_help(command).split())  # argparse wraps the help at the terminal width
    for strategy in STRATEGIES:
        assert f"{strategy}," in text or f"{strategy}." in text, strategy
    for method in known_methods():
        assert f"{method}," in text or f"{method}." in text, method


def test_help_group_headings_are_titles_not_lightning_docstrings():
    text = _help("run")
    headings = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert "Data (--data):" in headings and "Model (--model):" in headings, headings
    assert "standardizes" not in text and "<class " not in text


def test_building_and_printing_the_help_imports_no_solver():
    # what help cannot avoid (the method registries are Lightning callbacks, so torch and lightning
    # come with them) is measured in the notes; what it does not need must stay out
    script = (
        "import sys, io, contextlib\n"
        "import lightning_prune.cli as cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        cli.main(['run', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'infobatch' in out.getvalue()\n"
        "print(sorted(m for m in ('ortools', 'lightning.pytorch.cli', 'tensorboard', 'tensorboardX')"
        " if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- errors
def test_output_dir_that_is_a_file_is_one_clear_line(tmp_path, tiny_config, capsys):
    target = tmp_path / "a_file"
    target.write_text("not a directory")
    err = _fails(capsys, ["select", "--config", str(tiny_config), "--output_dir", str(target)], str(target))
    assert "is a file" in err and "--output_dir" in err


def test_a_file_where_a_run_directory_folder_should_be_is_one_clear_line(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "scores").write_text("a file where the scores folder goes")
    err = _fails(capsys, ["score", "--config", str(tiny_config), "--output_dir", str(out)], str(out / "scores"))
    assert "directory" in err


def test_a_parse_error_is_one_line_and_debug_raises_it(tmp_path, tiny_config, capsys):
    argv = ["run", "--config", str(tiny_config), "--output_dir", str(tmp_path / "x"), "--train_epochs", "abc"]
    _fails(capsys, argv, "train_epochs")
    with pytest.raises(Exception, match="train_epochs"):
        main([*argv, "--debug"])


def test_errors_on_other_ranks_name_the_rank(tmp_path, tiny_config, capsys, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    argv = ["run", "--config", str(tiny_config), "--output_dir", str(tmp_path / "x"), "--seeds", "[-1]"]
    err = _fails(capsys, argv, "seed=-1")
    assert err.startswith("[rank 1] ")


# ---------------------------------------------------------------- interruption
def _interrupted_run(tmp_path: Path, tiny_config: Path, signum: int) -> subprocess.CompletedProcess[str]:
    """A tiny ``lightning-prune run`` in a subprocess that signals itself at the first training epoch."""
    out = tmp_path / "run"
    script = (
        "import os, sys\n"
        "from lightning_prune.cli import main\n"
        "import lightning.pytorch as pl\n"
        "class Signal(pl.Callback):\n"
        "    def on_train_epoch_start(self, trainer, pl_module):\n"
        f"        os.kill(os.getpid(), {int(signum)})\n"
        "import lightning_prune.pipeline.runner as runner\n"
        "original = runner.PruningRun.make_trainer\n"
        "runner.PruningRun.make_trainer = lambda self, e, callbacks=None, **kw: "
        "original(self, e, [*(callbacks or []), Signal()], **kw)\n"
        f"main(['run', '--config', {str(tiny_config)!r}, '--output_dir', {str(out)!r}])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_a_signal_says_interrupted_and_the_exact_command_to_resume(tmp_path, tiny_config, signum, name):
    result = _interrupted_run(tmp_path, tiny_config, signum)
    assert result.returncode == 128 + signum, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "interrupted" in line]
    assert len(lines) == 1, result.stderr[-2000:]
    assert name in lines[0] and "Traceback" not in result.stderr
    resume = f"cd {tmp_path} && lightning-prune run --config {tiny_config} --output_dir {tmp_path / 'run'}"
    assert resume in lines[0]


def test_keyboard_interrupt_in_process_exits_130_with_the_resume_command(tmp_path, tiny_config, capsys, monkeypatch):
    import lightning_prune.pipeline.runner as runner

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.PruningRun, "score", interrupted)
    argv = ["select", "--config", str(tiny_config), "--output_dir", str(tmp_path / "x")]
    # what the process inherited: Python's default handler, or SIG_IGN for a job started with nohup or `&`
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err
    assert f"lightning-prune select --config {tiny_config} --output_dir {tmp_path / 'x'}" in err
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


# ---------------------------------------------------------------- the built-in study
def test_the_built_in_study_runs_the_readme_recommendation():
    # the README recommends `strategy: auto` on DUAL scores with `select_args: {validate: true}`;
    # the study `lightning-prune run` runs with no arguments must show it next to the others
    from lightning_prune.cli import default_config_path

    config = build_pipeline_parser().parse_args(["--config", str(default_config_path())])
    specs = [vars(spec) if not isinstance(spec, dict) else spec for spec in config.methods]
    recommended = [
        spec
        for spec in specs
        if spec["name"] == "dual" and spec.get("strategy") == "auto" and (spec.get("select_args") or {}).get("validate")
    ]
    assert len(recommended) == 1, specs
    assert recommended[0].get("label") == "recommended"


@pytest.mark.parametrize("spelling", ["separate", "equals"])
def test_methods_on_the_command_line_replace_the_configs_list_whole(tiny_config, spelling):
    # jsonargparse merges a list of dataclasses item by item: the config's first method's `strategy`
    # leaked into the command line's first method, which set none
    value = "[{name: el2n, label: b}, {name: forgetting}]"
    given = ["--methods", value] if spelling == "separate" else [f"--methods={value}"]
    parser = build_pipeline_parser("run")
    config = parser.parse_args(["--config", str(tiny_config), *given])
    assert [(m.name, m.label, m.strategy) for m in config.methods] == [("el2n", "b", None), ("forgetting", None, None)]
