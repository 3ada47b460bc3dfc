"""``lightning-prune``: the command line, on LightningCLI and jsonargparse.

* ``lightning-prune fit|validate|test|predict --config ...`` is a standard ``LightningCLI`` (any
  model and datamodule by class path); lightning-prune's collectors go in ``trainer.callbacks``.
* ``lightning-prune run [--config run.yaml]`` runs the whole study: score -> select -> train on each
  coreset (plus the random baseline and the full data, over several seeds) -> report. Without a
  config it runs the built-in digits study. Re-running the same command resumes.
* ``lightning-prune score`` and ``lightning-prune select`` stop after those steps.
* ``lightning-prune export --selection SEL.npz --format npy|csv|parquet|hf|litdata --output PATH`` writes a
  selection for another pipeline (:mod:`lightning_prune.integrations.export`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lightning_prune.pipeline.methods import MethodSpec, known_methods
from lightning_prune.pipeline.run_dir import RunDirectoryBusy
from lightning_prune.pipeline.runner import PruningRun
from lightning_prune.selection.strategies import STRATEGIES

PIPELINE_COMMANDS = {
    "run": "score -> select -> train on every coreset -> report (table, report.json, plots)",
    "score": "train once on the full data with the collectors and write the score files",
    "select": "score if needed, then write a selection file per method and pruning ratio",
}
EXPORT_COMMANDS = {
    "export": "write a selection for another pipeline: sorted .npy ids, CSV/Parquet, a pruned datasets.Dataset or "
    "LitData copy",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def default_config_path() -> Path:
    return Path(str(resources.files("lightning_prune") / "configs" / "digits.yaml"))


PARSER_KWARGS: dict[str, Any] = {"allow_abbrev": False, "exit_on_error": False}
"""Every parser of the command line: an option is spelled out in full (a prefix such as ``--train_epoch``
is an error, not ``--train_epochs``), and a parse error is raised for :func:`main` to print as one line."""

GROUP_TITLES = {"data": "Data (--data)", "model": "Model (--model)", "score_model": "Scoring proxy (--score_model)"}
"""Headings of the class-path groups (jsonargparse titles them with the base class's docstring)."""


def _last_value(argv: list[str], option: str) -> str | None:
    """The value of the last ``option VALUE`` or ``option=VALUE`` in ``argv``; ``None`` if not given."""
    value = None
    for position, arg in enumerate(argv):
        if arg == option and position + 1 < len(argv):
            value = argv[position + 1]
        elif arg.startswith(option + "="):
            value = arg[len(option) + 1 :]
    return value


class PipelineParser(ArgumentParser):
    """The pipeline commands' parser: a ``--methods`` list given on the command line replaces the config's
    list whole. jsonargparse merges a list of dataclasses item by item, so without this a config's first
    method's ``strategy`` or ``args`` would leak into the first method of the command line's list."""

    @override
    def parse_args(self, args: Any = None, *rest: Any, **kwargs: Any) -> Namespace:  # type: ignore[override]
        config = super().parse_args(args, *rest, **kwargs)
        given = _last_value(list(sys.argv[1:] if args is None else args), "--methods")
        if given is not None and "methods" in config:
            alone = ArgumentParser(**PARSER_KWARGS)
            alone.add_argument("--methods", type=list[MethodSpec], required=True)
            config.methods = alone.parse_args(["--methods", given]).methods
        return config


def build_pipeline_parser(command: str = "run") -> ArgumentParser:
    parser = PipelineParser(
        prog=f"lightning-prune {command}",
        description=f"{PIPELINE_COMMANDS[command]}. Without --config, the built-in digits study "
        f"({default_config_path()}) is used.",
        **PARSER_KWARGS,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the settings below.")
    parser.add_argument("--name", type=str, default="study", help="Name of the run (and of its directory).")
    parser.add_argument(
        "--output_dir",
        type=str | None,
        default=None,
        help="Run directory (default: ./prune_runs/NAME). Re-running resumes in it.",
    )
    parser.add_subclass_arguments(
        pl.LightningDataModule,
        "data",
        required=True,
        help="The full data set, e.g. lightning_prune.data.DigitsDataModule.",
    )
    parser.add_subclass_arguments(
        pl.LightningModule,
        "model",
        required=True,
        help="A fresh model per training, e.g. lightning_prune.models.Classifier.",
    )
    parser.add_subclass_arguments(
        pl.LightningModule,
        "score_model",
        required=False,
        help="A proxy the scoring runs train instead of the model (e.g. a smaller backbone; charged its FLOPs); "
        "default: the model itself.",
    )
    parser.add_argument(
        "--methods",
        type=list[MethodSpec],
        required=True,
        help=f"Methods to compare, each {{name, args, label, strategy, select_args, ...}}; names: "
        f"{', '.join(known_methods())}.",
    )
    parser.add_argument(
        "--prune_ratios", type=list[float], default=[0.3, 0.5, 0.7], help="Fractions of the training set to remove."
    )
    parser.add_argument(
        "--strategy",
        type=str,
        default="topk",
        help=f"Selection strategy of the score-based methods (a method's own `strategy` wins): "
        f"{', '.join(sorted(STRATEGIES))}.",
    )
    parser.add_argument(
        "--seeds",
        type=list[int],
        default=[0],
        help="One coreset training (and random baseline) per seed; adding seeds later resumes.",
    )
    parser.add_argument(
        "--score_seed",
        type=int,
        default=0,
        help="Seed of the scoring run and of every method's selection (independent of --seeds).",
    )
    parser.add_argument("--score_epochs", type=int, default=20, help="Epochs of the full-data scoring run.")
    parser.add_argument("--train_epochs", type=int, default=20, help="Epochs of every coreset training.")
    parser.add_argument(
        "--weighted",
        type=bool,
        default=False,
        help="Train coresets with importance weights (TDDS Eq. 13 min-max normalised scores).",
    )
    parser.add_argument(
        "--budget",
        type=str,
        default="epochs",
        help="How long coresets train: 'epochs' (train_epochs epochs over the coreset: saves compute) or 'steps' "
        "(as many optimiser steps as the full-data training: data efficiency, the CCS/D2 protocol).",
    )
    parser.add_argument(
        "--budget_baselines",
        type=bool,
        default=True,
        help="Add the equal-cost baselines at every ratio (budget 'epochs'): full-budget (the full data for the "
        "coreset's optimiser steps) and rs2 (a fresh random subset every epoch).",
    )
    parser.add_argument(
        "--trainer",
        type=dict[str, Any],
        default={},
        help="Keyword arguments of every Trainer (accelerator, devices, precision, ...).",
    )
    for key, title in GROUP_TITLES.items():
        (parser.groups or {})[key].title = title
    return parser


def make_run(parser: ArgumentParser, config: Namespace, log=print) -> PruningRun:
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes

    def build() -> Namespace:
        return instantiate(config)

    output_dir = config.output_dir or str(Path.cwd() / "prune_runs" / config.name)
    with warnings.catch_warnings():
        # `skip_none=False` keeps unset (None) settings in the run's identity, as every run.json written so far
        # has them; jsonargparse 4.49+ warns that the option will be renamed, which is no news for the user
        warnings.simplefilter("ignore")
        plain = parser.dump(config, format="json", skip_none=False)
    settings = json.loads(plain)
    return PruningRun(
        run_dir=output_dir,
        make_data=lambda: build().data,
        make_model=lambda: build().model,
        methods=[m if isinstance(m, MethodSpec) else MethodSpec(**vars(m)) for m in build().methods],
        prune_ratios=config.prune_ratios,
        seeds=config.seeds,
        score_epochs=config.score_epochs,
        train_epochs=config.train_epochs,
        strategy=config.strategy,
        trainer_args=dict(config.trainer or {}),
        # a proxy enters the identity only when given, so runs made before the setting keep theirs
        description={
            "data": settings["data"],
            "model": settings["model"],
            **({"score_model": settings["score_model"]} if config.get("score_model") is not None else {}),
        },
        weighted=config.weighted,
        log=log,
        score_seed=config.score_seed,
        budget=config.budget,
        budget_baselines=config.budget_baselines,
        make_score_model=(lambda: build().score_model) if config.get("score_model") is not None else None,
    )


def _quiet_lightning() -> None:
    """The pipeline prints one line per step; Lightning's per-Trainer banners would bury them."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*treespec.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")


def check_output_dir(output_dir: Path) -> None:
    """Refuse a run directory that is a file, or lies under one, before anything is trained."""
    for path in (output_dir, *output_dir.parents):
        if path.exists() and not path.is_dir():
            where = "" if path == output_dir else f" (it would hold {output_dir})"
            raise ValueError(
                f"--output_dir: {path} is a file, not a directory{where}; give the path of a directory "
                "(it is created if missing)."
            )


def pipeline_main(command: str, argv: list[str]) -> dict[str, Any] | None:
    parser = build_pipeline_parser(command)
    if not any(arg == "--config" or arg.startswith("--config=") for arg in argv) and not {"-h", "--help"} & set(argv):
        argv = ["--config", str(default_config_path()), *argv]
    config = parser.parse_args(argv)
    _quiet_lightning()
    run = make_run(parser, config)
    check_output_dir(run.run_dir)
    run.log(f"lightning-prune {command}: run directory {run.run_dir}")
    if command == "run":
        return run.run()
    with run.locked():
        run.check_run_dir()
        run.score(train_for_influence=command == "select")
        if command == "select":
            run.select()
    return None


def build_export_parser() -> ArgumentParser:
    from lightning_prune.integrations.export import EXPORT_FORMATS

    formats = "; ".join(f"{name}: {fmt.description}" for name, fmt in EXPORT_FORMATS.items())
    parser = ArgumentParser(
        prog="lightning-prune export",
        description=f"{EXPORT_COMMANDS['export']}. Writes OUTPUT and OUTPUT.manifest.json beside it.",
        **PARSER_KWARGS,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with the settings below.")
    parser.add_argument("--selection", type=str, required=True, help="A selection file (.npz) written by select.")
    parser.add_argument("--output", type=str, required=True, help="The file or directory to write.")
    parser.add_argument("--format", type=str, default="npy", help=f"What to write ({formats}).")
    parser.add_argument(
        "--scores", type=str | None, default=None, help="The scores file (.npz) for the tables' score column."
    )
    parser.add_argument(
        "--dataset",
        type=str | None,
        default=None,
        help="The data to copy: hf, a datasets.Dataset saved with save_to_disk; litdata, the optimised directory.",
    )
    parser.add_argument(
        "--index_column",
        type=str | None,
        default=None,
        help="hf: the column holding each row's sample index (default: the row number).",
    )
    return parser


def export_main(argv: list[str]) -> Path:
    from lightning_prune.integrations.export import export_selection, manifest_path

    config = build_export_parser().parse_args(argv)
    output = export_selection(
        config.selection,
        config.output,
        config.format,
        scores=config.scores,
        dataset=config.dataset,
        index_column=config.index_column,
    )
    print(f"lightning-prune export: wrote {output} ({config.format}) and {manifest_path(output)}")
    return output


def lightning_main(argv: list[str]) -> None:
    from lightning.pytorch.cli import LightningCLI

    # the arguments are given explicitly (without --debug); LightningCLI warns when it also sees sys.argv's
    program, sys.argv = sys.argv, sys.argv[:1]
    try:
        LightningCLI(
            model_class=pl.LightningModule,
            datamodule_class=pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=argv,
            save_config_kwargs={"overwrite": True},
            # LightningCLI gives its own kwargs to the main parser, a subcommand's keyed by its name
            parser_kwargs={
                **PARSER_KWARGS,
                "prog": "lightning-prune",
                **{name: dict(PARSER_KWARGS) for name in LIGHTNING_COMMANDS},
            },
        )
    finally:
        sys.argv = program


def _usage() -> str:
    lines = ["usage: lightning-prune COMMAND [--config FILE] [options]", "", "Pruning pipeline:"]
    lines += [f"  {name:<9} {text}" for name, text in PIPELINE_COMMANDS.items()]
    lines += ["", "Selections for other pipelines:"]
    lines += [f"  {name:<9} {text}" for name, text in EXPORT_COMMANDS.items()]
    lines += ["", "Lightning (LightningCLI; add collectors under trainer.callbacks):"]
    lines += [
        f"  {name:<9} Trainer.{name} with a model and datamodule given by class path" for name in LIGHTNING_COMMANDS
    ]
    lines += [
        "",
        "`lightning-prune COMMAND --help` lists a command's options. `lightning-prune run` alone runs "
        "the built-in digits study. Errors print one line; add --debug for the traceback.",
    ]
    return "\n".join(lines)


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, RunDirectoryBusy, argparse.ArgumentError, ImportError)
"""What a wrong setting, a wrong path, a busy directory, a parse error or a missing optional package (its message
names the extra to install) raises: one line for the user, no traceback, exit status 2 (argparse's status for a
usage error); ``--debug`` raises it instead."""

PATH_ERRORS = (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
"""A file where a directory should be (or the reverse), or a path the user may not write: one line naming it."""


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM (SLURM preemption, `docker stop`, `timeout`) arrived.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that no ``except Exception`` on the way swallows
    it; Lightning tears the Trainer down and re-raises it (a ``KeyboardInterrupt`` it would turn into
    ``sys.exit(1)`` without a word).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def _interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block; the previous handlers come back after."""
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def resume_command(argv: list[str]) -> str:
    """The exact command that resumes the interrupted one, from the directory it ran in."""
    return f"cd {shlex.quote(os.getcwd())} && {shlex.join(['lightning-prune', *argv])}"


def _say(line: str, rank_zero: bool = False) -> None:
    """One line on stderr; ``rank_zero``: only rank 0 says it (every rank receives a signal and has the same
    command), otherwise another rank's line names the rank (an error may be its own)."""
    rank = int(getattr(rank_zero_only, "rank", 0))  # set by Lightning per process; the stubs do not declare it
    if rank_zero and rank != 0:
        return
    prefix = f"[rank {rank}] " if rank != 0 else ""
    print(prefix + line, file=sys.stderr, flush=True)


def _one_line(error: BaseException) -> str:
    """The error's message on one line (jsonargparse's nest the reasons over several)."""
    return " ".join(str(error).split())


def _run_command(command: str, rest: list[str], argv: list[str]) -> None:
    if command in PIPELINE_COMMANDS:
        pipeline_main(command, rest)
    elif command in EXPORT_COMMANDS:
        export_main(rest)
    else:
        lightning_main(argv)


def _handled(command: str, argv: list[str], debug: bool, run: Callable[[], None]) -> None:
    """Run one command; an interruption, a user error or a path error ends in one line and its exit status."""
    with _interrupts_raise():
        try:
            run()
            return None
        except (Interrupted, SIGTERMException, KeyboardInterrupt) as stop:
            signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGTERM
            if isinstance(stop, KeyboardInterrupt):
                signum = signal.SIGINT
            _say(
                f"lightning-prune {command}: interrupted by {signal.Signals(signum).name}; every finished step is "
                f"saved, re-run the same command to resume: {resume_command(argv)}",
                rank_zero=True,
            )
            # the shell's convention for a process ended by a signal: 130 for SIGINT, 143 for SIGTERM
            raise SystemExit(128 + signum) from None
        except PATH_ERRORS as error:
            if debug:
                raise
            what = {
                FileExistsError: "a file is where a directory should be",
                NotADirectoryError: "a file is where a directory should be",
                IsADirectoryError: "a directory is where a file should be",
                PermissionError: "permission denied",
            }[type(error)]
            path = error.filename or error
            _say(f"lightning-prune {command}: error: {path}: {what}; move it away or choose another --output_dir.")
            raise SystemExit(2) from None
        except USER_ERRORS as error:
            if debug:
                raise
            _say(f"lightning-prune {command}: error: {_one_line(error)} (add --debug for the traceback)")
            raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    resume_argv = list(argv)
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return None
    command, rest = argv[0], argv[1:]
    if command in (*PIPELINE_COMMANDS, *EXPORT_COMMANDS, *LIGHTNING_COMMANDS):
        return _handled(command, resume_argv, debug, lambda: _run_command(command, rest, argv))
    print(_usage(), file=sys.stderr)
    raise SystemExit(
        f"lightning-prune: unknown command {command!r}; choose one of "
        f"{', '.join([*PIPELINE_COMMANDS, *EXPORT_COMMANDS, *LIGHTNING_COMMANDS])}."
    )


if __name__ == "__main__":
    main()
