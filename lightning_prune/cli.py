"""``lightning-prune``: the command line, on LightningCLI and jsonargparse.

* ``lightning-prune fit|validate|test|predict --config ...`` is a standard ``LightningCLI`` (any
  model and datamodule by class path); lightning-prune's collectors go in ``trainer.callbacks``.
* ``lightning-prune run [--config run.yaml]`` runs the whole study: score -> select -> train on each
  coreset (plus the random baseline and the full data, over several seeds) -> report. Without a
  config it runs the built-in digits study. Re-running the same command resumes.
* ``lightning-prune score`` and ``lightning-prune select`` stop after those steps.
"""

from __future__ import annotations

import signal
import sys
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_prune.pipeline.methods import MethodSpec
from lightning_prune.pipeline.run_dir import RunDirectoryBusy
from lightning_prune.pipeline.runner import PruningRun

PIPELINE_COMMANDS = {
    "run": "score -> select -> train on every coreset -> report (table, report.json, plots)",
    "score": "train once on the full data with the collectors and write the score files",
    "select": "score if needed, then write a selection file per method and pruning ratio",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def default_config_path() -> Path:
    return Path(str(resources.files("lightning_prune") / "configs" / "digits.yaml"))


def build_pipeline_parser(command: str = "run") -> ArgumentParser:
    parser = ArgumentParser(
        prog=f"lightning-prune {command}",
        description=f"{PIPELINE_COMMANDS[command]}. Without --config, the built-in digits study "
        f"({default_config_path()}) is used.",
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
    parser.add_argument(
        "--methods",
        type=list[MethodSpec],
        required=True,
        help="Methods to compare: collector names (tdds, forgetting, el2n, ...), adapruner, influence.",
    )
    parser.add_argument(
        "--prune_ratios", type=list[float], default=[0.3, 0.5, 0.7], help="Fractions of the training set to remove."
    )
    parser.add_argument("--strategy", type=str, default="topk", help="topk, random, class_balanced or ccs.")
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
        "--trainer",
        type=dict[str, Any],
        default={},
        help="Keyword arguments of every Trainer (accelerator, devices, precision, ...).",
    )
    return parser


def make_run(parser: ArgumentParser, config: Namespace, log=print) -> PruningRun:
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes

    def build() -> Namespace:
        return instantiate(config)

    output_dir = config.output_dir or str(Path.cwd() / "prune_runs" / config.name)
    plain = parser.dump(config, format="json", skip_none=False)
    import json

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
        description={"data": settings["data"], "model": settings["model"]},
        weighted=config.weighted,
        log=log,
        score_seed=config.score_seed,
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


def pipeline_main(command: str, argv: list[str]) -> dict[str, Any] | None:
    parser = build_pipeline_parser(command)
    if not any(arg == "--config" or arg.startswith("--config=") for arg in argv) and not {"-h", "--help"} & set(argv):
        argv = ["--config", str(default_config_path()), *argv]
    config = parser.parse_args(argv)
    _quiet_lightning()
    run = make_run(parser, config)
    run.log(f"lightning-prune {command}: run directory {run.run_dir}")
    if command == "run":
        return run.run()
    with run.locked():
        run.check_run_dir()
        run.score(train_for_influence=command == "select")
        if command == "select":
            run.select()
    return None


def lightning_main(argv: list[str]) -> None:
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(
        model_class=pl.LightningModule,
        datamodule_class=pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
    )


def _usage() -> str:
    lines = ["usage: lightning-prune COMMAND [--config FILE] [options]", "", "Pruning pipeline:"]
    lines += [f"  {name:<9} {text}" for name, text in PIPELINE_COMMANDS.items()]
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


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, RunDirectoryBusy)
"""What a wrong setting, a wrong path or a busy directory raises: one line for the user, no traceback."""


class Terminated(Exception):
    """SIGTERM arrived (SLURM preemption, `docker stop`, `timeout`)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _run_command(command: str, rest: list[str], argv: list[str]) -> None:
    if command in PIPELINE_COMMANDS:
        pipeline_main(command, rest)
    else:
        lightning_main(argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return None
    command, rest = argv[0], argv[1:]
    if command in (*PIPELINE_COMMANDS, *LIGHTNING_COMMANDS):
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            _run_command(command, rest, argv)
        except (Terminated, SIGTERMException):
            print(
                f"lightning-prune {command}: stopped by SIGTERM. Every finished step is saved; re-run the same "
                "command to resume where it stopped.",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(128 + signal.SIGTERM) from None
        except USER_ERRORS as error:
            if debug:
                raise
            print(f"lightning-prune {command}: error: {error}", file=sys.stderr)
            print("(add --debug for the traceback)", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        return None
    print(_usage(), file=sys.stderr)
    raise SystemExit(
        f"lightning-prune: unknown command {command!r}; choose one of "
        f"{', '.join([*PIPELINE_COMMANDS, *LIGHTNING_COMMANDS])}."
    )


if __name__ == "__main__":
    main()
