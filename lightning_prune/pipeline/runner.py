"""The whole job in one object: score -> select -> train on each coreset -> report.

A run lives in one directory::

    RUN_DIR/
      run.json                   what the run is (data, model, epochs, trainer); checked on re-runs
      scores/METHOD.npz          one score file per scoring method (with manifest)
      scores/METHOD.mislabelled.json  the samples most likely mislabelled, by methods that record predictions
      selections/METHOD-rR.npz   one selection per method and pruning ratio (with manifest)
      cells/METHOD-rR-sS.json    one result per (method, ratio, seed): test accuracy, size, time, cost
      costs/NAME.json            what the scoring run / a mask training cost (samples forwarded, time)
      checkpoints/scoring-Eep/   the unfinished scoring run's last epoch (removed once its scores are written)
      report.json, plots/*.png   written by the report step

Every artefact is written atomically when its step finishes and skipped when it already exists, so
re-running the same command resumes where the last one stopped; an interrupted scoring run resumes
from its last epoch. Each selection and cell records the settings it was made under, and a re-run
with other settings refuses to reuse it (naming each setting with its old and new value).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from lightning_prune.collectors.base import ScoreCollector
from lightning_prune.data.indexed import dataset_targets, split_batch
from lightning_prune.data.pruned import loader_settings
from lightning_prune.dynamic.rs2 import RS2 as RS2Callback
from lightning_prune.pipeline.budget import StepBudget
from lightning_prune.pipeline.context import CellTraining, MethodSpec, RunContext, RunFiles
from lightning_prune.pipeline.cost import CostMeter, add_costs, forward_flops, proxy_cost, read_cost, write_cost
from lightning_prune.pipeline.methods import check_dynamic_on_top, method_for, static_training
from lightning_prune.pipeline.names import BASELINES, FULL, FULL_BUDGET, RANDOM, RS2, check_label, ratio_label
from lightning_prune.pipeline.progress import EpochProgress
from lightning_prune.pipeline.ranks import join_outside_launch, rank, rank_zero_decides
from lightning_prune.pipeline.report import RunResults, build_report, write_report
from lightning_prune.pipeline.resume import (
    GlobalRandomState,
    had_checkpoint,
    remove_checkpoints,
    resumable_checkpoint,
    scoring_checkpoint,
)
from lightning_prune.pipeline.run_dir import check_identity, differences, locked, read_json
from lightning_prune.pipeline.trainer_settings import INSTANTIATED_TRAINER_ARGS, identity_trainer_args, instantiate
from lightning_prune.pipeline.validated import VALIDATE
from lightning_prune.selection.files import to_jsonable, write_text_atomic
from lightning_prune.selection.mislabelled import listable, mislabelled
from lightning_prune.selection.ratio_aware import BUDGETS
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection
from lightning_prune.selection.strategies import (
    STRATEGIES,
    check_prune_ratio,
    check_seed,
    num_to_keep,
    random_selection,
)
from lightning_prune.trainer_access import unrepeated_distributed_sampler

SCORE_EPOCHS_KEY = "score_epochs"
"""Recorded next to a score file's hyper-parameters: the length of the scoring run that made it."""
SCORING_RUN_KEY = "scoring_run"
"""Recorded next to a score file's hyper-parameters: the run settings its scoring run trained under."""

ADAPRUNER_RATIO_TOLERANCE = 0.05
"""How far a learned selection's pruning ratio may end from the target before the run warns."""


LAUNCH_TRAINER_ARGS = ("accelerator", "strategy", "devices", "num_nodes", "plugins")
"""Trainer settings that decide how a run's processes are started and joined (cluster environment included)."""
RUN_SET_TRAINER_ARGS = ("max_epochs", "min_epochs", "max_steps", "min_steps", "max_time")
"""Trainer settings the run sets itself: every training runs ``score_epochs`` or ``train_epochs`` epochs."""


def _check_settings(
    methods: list[MethodSpec],
    prune_ratios: list[float],
    seeds: list[int],
    score_epochs: int,
    train_epochs: int,
    strategy: str,
    score_seed: int,
    trainer_args: dict[str, Any],
    budget: str = "epochs",
) -> None:
    """Refuse a run's settings before anything is trained, naming the setting and the fix."""
    if budget not in BUDGETS:
        raise ValueError(
            f"budget={budget!r} is not one of {list(BUDGETS)}: 'epochs' trains each coreset train_epochs epochs "
            "(compute savings), 'steps' as many optimiser steps as the full-data training (data efficiency)."
        )
    if not methods:
        raise ValueError("A run needs at least one method; list them under `methods:`.")
    for spec in methods:
        check_label(spec.key)
    labels = [m.key for m in methods]
    if len(set(labels)) != len(labels) or set(BASELINES) & set(labels):
        raise ValueError(
            f"Method labels must be unique and not one of {list(BASELINES)} (added automatically); got {labels}. "
            "Give repeated methods distinct `label:`s."
        )
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}.")
    for key in RUN_SET_TRAINER_ARGS:
        if key in trainer_args:
            raise ValueError(
                f"trainer.{key} is set by the run: the scoring run trains score_epochs epochs and every coreset "
                f"training train_epochs epochs. Remove trainer.{key} and set score_epochs / train_epochs instead."
            )
    for ratio in [*prune_ratios, *(r for spec in methods for r in spec.prune_ratios or [])]:
        check_prune_ratio(ratio)
    for spec in methods:
        _check_dynamic_settings(spec, budget)
        method_for(spec.name).check(spec, sorted(spec.prune_ratios or prune_ratios))
    if not seeds:
        raise ValueError("seeds must list at least one seed.")
    for seed in seeds:
        check_seed(seed, "seed")
    check_seed(score_seed, "score_seed")
    if score_epochs < 1 or train_epochs < 1:
        raise ValueError(f"score_epochs and train_epochs must be >= 1; got {score_epochs} and {train_epochs}.")
    for spec in methods:
        if spec.score_epochs is None:
            continue
        if not method_for(spec.name).uses_scores:
            raise ValueError(
                f"Method {spec.key!r} sets score_epochs, but only score-based methods read a scoring run; "
                "remove it (AdaPruner takes its training length as args.epochs)."
            )
        if int(spec.score_epochs) != spec.score_epochs or spec.score_epochs < 1:
            raise ValueError(f"Method {spec.key!r}: score_epochs={spec.score_epochs} must be a positive integer.")


def _check_dynamic_settings(spec: MethodSpec, budget: str) -> None:
    """``target_saving`` belongs to dynamic methods, ``dynamic`` (a dynamic method on top) to static ones."""
    static = method_for(spec.name).makes_selection
    if spec.target_saving and static:
        raise ValueError(
            f"Method {spec.key!r} ({spec.name}) sets target_saving, but it is static: it removes its ratio of the "
            "samples, which is its saving already. target_saving is for dynamic methods (infobatch, seta); to prune "
            "this coreset's training dynamically too, give the method `dynamic: {name: infobatch, args: "
            "{target_saving: 0.3}}`."
        )
    if spec.dynamic is None:
        return
    if not static:
        raise ValueError(
            f"Method {spec.key!r} ({spec.name}) is dynamic already; `dynamic:` stacks a dynamic method on a static "
            "selection (a score-based, adapruner or influence method). Remove `dynamic:`."
        )
    if budget == "steps":
        raise ValueError(
            f"Method {spec.key!r} sets `dynamic:`, but under budget: steps a static coreset trains a fixed number of "
            "optimiser steps, which dynamic pruning (epochs of varying length, planned by epochs) cannot follow. Use "
            "budget: epochs, or remove `dynamic:`."
        )
    check_dynamic_on_top(spec)


def _test(trainer: pl.Trainer, model: pl.LightningModule, data: pl.LightningDataModule) -> dict[str, Any]:
    """The test metrics of ``model`` after its fit, every test sample counted once.

    Under DDP, Lightning would deal the test set with a ``DistributedSampler``, which pads it with
    repeated samples so that every rank gets as many (and warns so): an accuracy over ranks then counts
    those samples twice. The test loader here deals each sample to one rank instead; the ranks' shares
    differ by at most one sample, which a metric synchronised at the epoch's end (as ``Classifier``'s
    torchmetrics accuracy is) does not notice."""
    if trainer.world_size == 1:
        return dict(trainer.test(model, datamodule=data, verbose=False)[0])
    data.setup("test")
    loader = data.test_dataloader()
    sampler = unrepeated_distributed_sampler(loader.dataset, trainer.world_size, trainer.global_rank)
    unrepeated = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, **loader_settings(loader))
    return dict(trainer.test(model, dataloaders=unrepeated, verbose=False)[0])


def _complete_cell(result: dict[str, Any]) -> bool:
    """Whether a cell file holds a whole result (a test accuracy in [0, 1], a non-negative cost)."""
    accuracy, forwarded = result.get("test_acc"), result.get("train_samples_forwarded", 0)
    return (
        isinstance(accuracy, int | float)
        and 0.0 <= accuracy <= 1.0
        and isinstance(forwarded, int | float)
        and forwarded >= 0
    )


class PruningRun:
    """Runs (and resumes) one pruning study.

    Args:
        run_dir: the directory holding every artefact of the run.
        make_data: returns a fresh ``LightningDataModule`` of the full data set.
        make_model: returns a fresh, untrained ``LightningModule`` (training_step returns logits and
            test_step logs ``test_acc``, as :class:`~lightning_prune.models.Classifier` does).
        methods: the methods to compare; the random baseline and the full-data reference are added.
        prune_ratios: fractions of the training set to remove.
        seeds: one coreset training per seed and cell.
        score_epochs: epochs of the full-data scoring run.
        train_epochs: epochs of every coreset training.
        strategy: default selection strategy of score-based methods.
        trainer_args: keyword arguments given to every ``Trainer`` (accelerator, devices, precision...).
        description: what defines the run (data, model, epochs); a re-run with another description
            in the same directory is refused instead of mixing results.
        log: where progress lines go (rank 0 only).
        score_seed: seed of the scoring run and of every score-based and learned selection. Fixed (0 by
            default) rather than taken from ``seeds``, so adding, removing or reordering seeds later
            reuses every finished artefact; ``seeds`` only seed the coreset trainings and random baselines.
        budget: ``"epochs"`` (each coreset trains ``train_epochs`` epochs over itself: compute savings) or
            ``"steps"`` (each static coreset trains as many optimiser steps as the full-data training: data
            efficiency, the CCS / D2-Pruning protocol); see :mod:`lightning_prune.pipeline.budget`.
        budget_baselines: add the equal-cost baselines at every ratio (``budget: epochs`` only): ``full-budget``
            (the full data for the optimiser steps of the ratio's coreset training, its schedule fitted to
            them) and ``rs2`` (a fresh random subset of the ratio's size every epoch, without replacement).
        make_score_model: the proxy the scoring runs train instead of ``make_model``'s model ("Selection via
            Proxy", Coleman et al., ICLR 2020: score with a smaller model, train the target on the coreset);
            ``None``: the model itself. A scoring run is charged its samples forwarded times the proxy's
            forward FLOPs over the model's (:func:`~lightning_prune.pipeline.cost.forward_flops`), so the
            report compares what it really cost. Methods reading the scoring run's model (influence) read the
            proxy's; the coreset trainings and AdaPruner train the model. Name it in ``description``
            (``score_model``, as the command line does), so that score files record it and a changed proxy
            is refused instead of reused.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        make_data: Callable[[], pl.LightningDataModule],
        make_model: Callable[[], pl.LightningModule],
        methods: list[MethodSpec],
        prune_ratios: list[float],
        seeds: list[int],
        score_epochs: int,
        train_epochs: int,
        strategy: str = "topk",
        trainer_args: dict[str, Any] | None = None,
        description: dict[str, Any] | None = None,
        weighted: bool = False,
        log: Callable[[str], None] = print,
        score_seed: int = 0,
        budget: str = "epochs",
        budget_baselines: bool = True,
        make_score_model: Callable[[], pl.LightningModule] | None = None,
    ) -> None:
        trainer_args = dict(trainer_args or {})
        # a score-based method without its own strategy selects with the run's: resolved once, here
        methods = [
            dataclasses.replace(spec, strategy=spec.strategy or strategy) if method_for(spec.name).uses_scores else spec
            for spec in methods
        ]
        _check_settings(
            methods, prune_ratios, seeds, score_epochs, train_epochs, strategy, score_seed, trainer_args, budget
        )
        self.budget = budget
        self.budget_baselines = bool(budget_baselines) and budget == "epochs"
        self.run_dir = Path(run_dir)
        self.files = RunFiles(self.run_dir)
        self.make_data = make_data
        self.make_model = make_model
        self.make_score_model = make_score_model
        self.methods = methods
        self.prune_ratios = sorted(float(r) for r in prune_ratios)
        self.seeds = [int(s) for s in seeds]
        self.score_seed = int(score_seed)
        self.score_epochs = score_epochs
        self.train_epochs = train_epochs
        self.strategy = strategy
        self.trainer_args = trainer_args
        self.description = {
            **(description or {}),
            "score_epochs": score_epochs,
            "train_epochs": train_epochs,
            "trainer": identity_trainer_args(self.trainer_args),
            "weighted": weighted,
            "score_seed": self.score_seed,
            # only when not the default, so that runs made before the setting existed keep their identity
            **({"budget": budget} if budget != "epochs" else {}),
        }
        self.weighted = weighted
        self.log = rank_zero_only(log)  # under DDP every rank runs the pipeline; one prints
        self.trained_scoring_model: pl.LightningModule | None = None
        """The model the scoring run trained in this process (methods that need it read it)."""
        self.method_cache: dict[str, dict[str, Any]] = {}
        """Per method key, what a method computes once and reuses for every ratio."""
        self._training_set_facts: tuple[int, Any] | None = None
        self._first_inputs: Any = None
        self._model_checked = False

    @property
    def context(self) -> RunContext:
        """What the run's methods see of it (built anew: it reads the run's present state)."""
        return RunContext(
            files=self.files,
            make_model=self.make_model,
            make_data=self.make_data,
            # through the instance, so that a subclass's (or a test's) make_trainer is the one methods use
            make_trainer=lambda *args, **kwargs: self.make_trainer(*args, **kwargs),
            training_set_facts=self.training_set_facts,
            log=self.log,
            score_seed=self.score_seed,
            score_epochs=self.score_epochs,
            train_epochs=self.train_epochs,
            coreset_budget=self.coreset_budget,
            weighted=self.weighted,
            scoring_model=lambda: self.trained_scoring_model,
            cache=self.method_cache,
            budget=self.budget,
        )

    @property
    def all_ratios(self) -> list[float]:
        """The run's ratios and every method's own: the random baseline runs at each."""
        return sorted({*self.prune_ratios, *(float(r) for spec in self.methods for r in spec.prune_ratios or [])})

    def ratios_for(self, spec: MethodSpec) -> list[float]:
        return sorted(float(r) for r in spec.prune_ratios) if spec.prune_ratios else self.prune_ratios

    # ------------------------------------------------------------------ paths
    def score_path(self, spec: MethodSpec) -> Path:
        return self.files.score_path(spec.key)

    def selection_path(self, key: str, ratio: float, seed: int | None = None) -> Path:
        return self.files.selection_path(key, ratio, seed)

    def cell_path(self, key: str, ratio: float, seed: int) -> Path:
        return self.files.cell_path(key, ratio, seed)

    # ------------------------------------------------------------------ steps
    def run(self) -> dict[str, Any]:
        """Every step, resuming; returns the report."""
        with self.locked():
            self.check_run_dir()
            self.score()
            self.select()
            self.upfront_costs()  # a missing or damaged cost record is named now, not after every training
            self.train()
            results = self.results_for_report()
            # one rank writes the files (the plots are not written atomically); every rank returns the report
            return write_report(results, log=self.log) if rank() == 0 else build_report(results)

    def upfront_costs(self) -> dict[str, dict[str, dict[str, Any] | None]]:
        """Per method and ratio, what its selection cost before the coreset training; a missing, damaged or
        negative cost record is refused, naming it and what to delete to measure it again."""
        context = self.context
        return {
            spec.key: {
                ratio_label(ratio): add_costs(
                    [read_cost(cost) for cost in method_for(spec.name).costs(context, spec, ratio)]
                )
                for ratio in self.ratios_for(spec)
            }
            for spec in self.methods
        }

    def results_for_report(self) -> RunResults:
        """What the report step reads: the finished cells and the score files, as plain data."""
        _, labels = self.training_set_facts()
        scores = {
            spec.key: Scores.load(self.score_path(spec)).values
            for spec in self.score_methods()
            if self.score_path(spec).exists()
        }
        return RunResults(
            run_dir=self.run_dir,
            description=self.description,
            methods=[m.key for m in self.methods],
            prune_ratios=self.all_ratios,
            seeds=self.seeds,
            cells=self.results(),
            scores=scores,
            upfront_costs=self.upfront_costs(),
            labels=None if labels is None else np.asarray(labels),
            training_inputs=self.training_inputs,
        )

    def training_inputs(self, indices: np.ndarray) -> list[Any]:
        """The inputs of the training samples ``indices`` (what the report pictures)."""
        data = self.make_data()
        data.setup("fit")
        train_set = data.train_dataloader().dataset
        return [split_batch(train_set[int(i)], need_indices=False, need_targets=False)[0] for i in indices]

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the run directory exclusively while the steps run (see :func:`run_dir.locked`); ranks an
        outside launcher started (``torchrun``, ``srun``) join first, so that rank 0 decides for all."""
        join_outside_launch(self.launch_trainer())
        return locked(self.run_dir)

    def launch_trainer(self) -> pl.Trainer:
        """A Trainer with only the run's settings that say how its processes are launched and joined."""
        args = {key: self.trainer_args[key] for key in LAUNCH_TRAINER_ARGS if key in self.trainer_args}
        return pl.Trainer(
            **{key: instantiate(value) for key, value in args.items()},
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    def check_run_dir(self) -> None:
        """Record what the run is in run.json, or check that a re-run is the same run (and say what differs);
        rank 0 checks, and its verdict holds on every rank."""
        rank_zero_decides(lambda: check_identity(self.run_dir, self.description, self.log))

    def make_trainer(
        self, max_epochs: int, callbacks: list[pl.Callback] | None = None, progress: str | None = None, **overrides: Any
    ) -> pl.Trainer:
        """A fresh Trainer with the run's settings; callbacks/loggers given by class_path are built anew each time.
        ``progress`` prefixes the epoch progress lines of a long training."""
        user = {
            key: instantiate(value) if key in INSTANTIATED_TRAINER_ARGS else value
            for key, value in self.trainer_args.items()
        }
        user_callbacks = user.pop("callbacks", None) or []
        args = {
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(self.run_dir / "logs"),  # `logger: true` logs here, not in ./lightning_logs
            **user,
            **overrides,
        }
        all_callbacks = [
            *(callbacks or []),
            *(user_callbacks if isinstance(user_callbacks, list) else [user_callbacks]),
        ]
        if progress is not None:
            all_callbacks.append(EpochProgress(progress, self.log))
        return pl.Trainer(max_epochs=max_epochs, callbacks=all_callbacks, **args)

    def score_methods(self) -> list[MethodSpec]:
        return [spec for spec in self.methods if method_for(spec.name).uses_scores]

    def training_set_facts(self) -> tuple[int, Any]:
        """``(N, labels in index order)`` of the full training set (read once)."""
        if self._training_set_facts is None:
            data = self.make_data()
            data.setup("fit")
            loader = data.train_dataloader()
            train_set = loader.dataset
            self._training_set_facts = (len(train_set), dataset_targets(train_set))
            with contextlib.suppress(Exception):  # only for check_model_fits_data, which then checks nothing
                self._first_inputs = split_batch(next(iter(loader)), need_indices=False, need_targets=False)[0]
        return self._training_set_facts

    def check_model_fits_data(self) -> None:
        """Refuse a model with fewer outputs than the data has classes before anything trains.

        Reads the model's ``forward`` on a first training batch; a model whose ``forward`` does not take
        the batch's inputs is not checked (its first training step fails instead).
        """
        if self._model_checked:
            return
        self._model_checked = True
        _, labels = self.training_set_facts()
        if labels is None or self._first_inputs is None or len(labels) == 0:
            return
        classes = int(np.max(np.asarray(labels))) + 1
        models = {"model": self.make_model, **({"score_model": self.make_score_model} if self.make_score_model else {})}
        for name, make in models.items():
            try:
                with torch.no_grad():
                    outputs = make()(self._first_inputs)
            except Exception:  # noqa: BLE001 -- any model: a forward that does not take the inputs is not checked
                continue
            if isinstance(outputs, torch.Tensor) and outputs.ndim == 2 and outputs.shape[1] < classes:
                raise ValueError(
                    f"The {name} outputs {outputs.shape[1]} class scores, but the training labels have {classes} "
                    f"classes (0..{classes - 1}): set the {name}'s number of classes (e.g. num_classes of its "
                    f"backbone) to {classes}."
                )

    def score_epochs_of(self, spec: MethodSpec) -> int:
        """The length of the scoring run ``spec`` reads (its own ``score_epochs`` or the run's)."""
        return int(spec.score_epochs) if spec.score_epochs is not None else self.score_epochs

    def score(self, train_for_influence: bool = True) -> dict[str, Scores]:
        """Train on the full data with every missing collector attached; write the score files.

        Methods whose scoring runs have the same length share one training; a method with its own
        ``score_epochs`` gets a run of that length. The influence method needs the run-length
        training's model too; ``train_for_influence=False`` skips the training when only that model
        is missing (``lightning-prune score``).
        """
        self.check_model_fits_data()
        specs = self.score_methods()
        for spec in specs:
            if self.score_path(spec).exists():
                self._check_reused_scores(spec)
        missing = [spec for spec in specs if not self.score_path(spec).exists()]
        lengths = sorted({self.score_epochs_of(spec) for spec in missing})
        if train_for_influence and self._model_needed() and self.score_epochs not in lengths:
            lengths.append(self.score_epochs)
        for epochs in lengths:
            self._scoring_run(epochs, [spec for spec in missing if self.score_epochs_of(spec) == epochs])
        scores = {spec.key: Scores.load(self.score_path(spec)) for spec in specs}
        self._list_mislabelled(scores)
        return scores

    def _list_mislabelled(self, scores: dict[str, Scores]) -> None:
        """Write the likely mislabelled samples of every method whose scores record predictions (missing ones
        only: a run scored before the list existed gets it on its next resume)."""
        for key, method_scores in scores.items():
            path = self.files.mislabelled_path(key)
            if path.exists() or not listable(method_scores):
                continue
            suspects = mislabelled(method_scores)
            suspects.save(path)
            disagree = int((suspects.predicted_labels != suspects.given_labels).sum())
            self.log(
                f"[score] wrote {path}: the {len(suspects)} samples {key} finds likeliest mislabelled "
                f"({disagree} of them predicted as another class)"
            )

    def _scoring_run(self, epochs: int, missing: list[MethodSpec]) -> None:
        """One full-data training of ``epochs`` epochs with the collectors of ``missing`` attached.

        It checkpoints every epoch and resumes from the last one when a previous attempt stopped (see
        :mod:`~lightning_prune.pipeline.resume`)."""
        collectors = {spec.key: self._collector(spec) for spec in missing}
        names = ", ".join(collectors) or "none (training the model a learned method needs)"
        self.log(f"[score] training on the full data for {epochs} epochs with collectors: {names}")
        folder = self.files.scoring_checkpoints(epochs)
        identity = {
            "epochs": epochs,
            "run": self.description,
            "collectors": {key: [c.method, to_jsonable(c.hparams())] for key, c in collectors.items()},
        }
        # rank 0 reads (and may empty) the folder; the others take its verdict rather than read it meanwhile
        stale, resume = rank_zero_decides(lambda: (had_checkpoint(folder), resumable_checkpoint(folder, identity)))
        if resume is not None:
            self.log(f"[score] resuming the scoring run from epoch {resume[1]} of {epochs} ({resume[0]})")
        elif stale:
            self.log(f"[score] {folder} holds a scoring run of other collectors or settings; starting over")
        pl.seed_everything(self.score_seed, verbose=False)
        model, data = (self.make_score_model or self.make_model)(), self.make_data()
        start = time.perf_counter()
        meter = CostMeter()
        callbacks = [*collectors.values(), meter, GlobalRandomState(), scoring_checkpoint(folder)]
        trainer = self.make_trainer(epochs, callbacks, progress="[score]", enable_checkpointing=True)
        with warnings.catch_warnings():
            # the folder is the run's own, holding the checkpoint this fit resumes from (or a stale one it replaces)
            warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
            trainer.fit(model, datamodule=data, ckpt_path=None if resume is None else str(resume[0]))
        served = list(missing)
        if epochs == self.score_epochs:
            self.trained_scoring_model = model
            served += [spec for spec in self.methods if method_for(spec.name).needs_scoring_model]
        record = meter.record() if self.make_score_model is None else proxy_cost(meter.record(), self.proxy_flops())
        for spec in served:  # a scoring run is charged to every method it served
            write_cost(self.files.scoring_cost(spec.key, paid_for=()), record)
        for key, collector in collectors.items():
            scores = collector.scores
            scores.hparams = {**scores.hparams, SCORE_EPOCHS_KEY: epochs, SCORING_RUN_KEY: self._scoring_settings()}
            path = scores.save(self.files.score_path(key))
            self.log(f"[score] wrote {path} ({time.perf_counter() - start:.1f} s)")
        remove_checkpoints(folder)

    def proxy_flops(self) -> float:
        """The proxy's forward FLOPs over the model's on a first training batch; 1.0 (charged as the model)
        where either cannot be measured."""
        self.training_set_facts()
        inputs = self._first_inputs
        proxy, target = (
            None if inputs is None else forward_flops(make(), inputs)
            for make in (self.make_score_model or self.make_model, self.make_model)
        )
        if not proxy or not target:
            self.log(
                "[score] WARNING: the FLOPs of score_model or model could not be counted on a training batch; the "
                "proxy's scoring run is charged as if the model had run it."
            )
            return 1.0
        return proxy / target

    @staticmethod
    def _collector(spec: MethodSpec) -> ScoreCollector:
        collector = method_for(spec.name).collector(spec)
        if collector is None:  # score_methods() holds only methods with collectors
            raise RuntimeError(f"internal: method {spec.key!r} has no collector")
        return collector

    def _refuse_reuse(self, path: Path, spec: MethodSpec, changed: list[str] | None = None) -> None:
        what = f" ({'; '.join(changed)})" if changed else ""
        raise ValueError(
            f"{path} was made with other settings than method {spec.key!r} has now{what}. Resuming would mix "
            "results of two set-ups: give the changed method a new `label:`, choose another output_dir, or delete "
            "the file."
        )

    def _scoring_settings(self) -> dict[str, Any]:
        """The run settings a scoring run depends on: all but the coreset trainings' (its length is per method)."""
        skip = ("train_epochs", "weighted", "score_epochs")
        return to_jsonable({key: value for key, value in self.description.items() if key not in skip})

    def _check_reused_scores(self, spec: MethodSpec) -> None:
        path = self.score_path(spec)
        scores, collector = Scores.load(path), self._collector(spec)
        hparams = dict(scores.hparams)
        # score files written before scoring runs could differ in length came from the run's scoring run
        epochs = hparams.pop(SCORE_EPOCHS_KEY, self.score_epochs)
        # score files written before they recorded their run's settings are taken as this run's
        made_under = hparams.pop(SCORING_RUN_KEY, None)
        if made_under is not None and made_under != self._scoring_settings():
            self._refuse_reuse(path, spec, differences(made_under, self._scoring_settings()))
        if (
            scores.method != collector.method
            or hparams != to_jsonable(collector.hparams())
            or epochs != self.score_epochs_of(spec)
        ):
            self._refuse_reuse(path, spec)

    def _selection_settings(self, spec: MethodSpec) -> dict[str, Any]:
        """What a method's selection files depend on besides the ratio (recorded in them, checked on reuse).

        The run's settings are part of it, except the coreset trainings' length, which only a validated
        selection reads (its candidates train that long)."""
        run = {key: value for key, value in self.description.items() if key != "train_epochs"}
        if spec.select_args.get(VALIDATE):
            run["train_epochs"] = self.train_epochs
        return to_jsonable(
            {
                "name": spec.name,
                "args": spec.args,
                "strategy": spec.strategy,
                "select_args": spec.select_args,
                **({"score_epochs": spec.score_epochs} if spec.score_epochs is not None else {}),
                "weighted": self.weighted,
                "seed": self.score_seed,
                "run": run,
            }
        )

    def _model_needed(self) -> bool:
        """Whether a method that reads the scoring run's model still has a selection to make."""
        return any(
            not self.selection_path(spec.key, r).exists()
            for spec in self.methods
            if method_for(spec.name).needs_scoring_model
            for r in self.ratios_for(spec)
        )

    def select(self) -> None:
        """Write every selection file that is missing (score-based, learned and random)."""
        self.check_model_fits_data()
        num_samples, labels = self.training_set_facts()
        context = self.context
        for spec in self.methods:
            if not method_for(spec.name).makes_selection:
                continue
            for ratio in self.ratios_for(spec):
                path = self.selection_path(spec.key, ratio)
                settings = self._selection_settings(spec)
                if path.exists():
                    recorded = Selection.load(path).hparams.get("run_settings")
                    if recorded != settings:
                        self._refuse_reuse(path, spec, differences(recorded or {}, settings))
                    continue
                start = time.perf_counter()
                selection = method_for(spec.name).selection(context, spec, ratio)
                selection.hparams["run_settings"] = settings
                self._check_reached(spec, ratio, selection)
                selection.save(path)
                self.log(
                    f"[select] {spec.key} at prune ratio {ratio:.2f}: kept {len(selection)} of "
                    f"{selection.num_samples} ({time.perf_counter() - start:.1f} s)"
                )
        for ratio in self.all_ratios:
            for seed in self.seeds:
                path = self.selection_path(RANDOM, ratio, seed)
                if not path.exists():
                    random_selection(num_samples, ratio, seed=seed, labels=labels).save(path)

    def _check_reached(self, spec: MethodSpec, ratio: float, selection: Selection) -> None:
        """Learned selections may end away from their target ratio: record the ratio reached, warn when far."""
        reached = selection.prune_ratio
        selection.hparams["prune_ratio_reached"] = reached
        if abs(reached - ratio) > ADAPRUNER_RATIO_TOLERANCE:
            self.log(
                f"[select] WARNING: {spec.key} at prune ratio {ratio:.2f} removed {reached:.1%} of the samples, "
                f"more than {ADAPRUNER_RATIO_TOLERANCE:.0%} away from the target; the report shows the ratio "
                "reached. Train the method longer or tune it so that it reaches its target."
            )

    def cells(self) -> list[tuple[str, float, int]]:
        cells = [(FULL, 0.0, seed) for seed in self.seeds]
        cells += [
            (spec.key, ratio, seed) for spec in self.methods for ratio in self.ratios_for(spec) for seed in self.seeds
        ]
        cells += [(RANDOM, ratio, seed) for ratio in self.all_ratios for seed in self.seeds]
        if self.budget_baselines:
            cells += [
                (key, ratio, seed) for key in (FULL_BUDGET, RS2) for ratio in self.all_ratios for seed in self.seeds
            ]
        return cells

    def cell_identity(self, key: str) -> dict[str, Any]:
        """The settings a cell of method ``key`` is made under: recorded in it, checked when it is reused."""
        spec = next((spec for spec in self.methods if spec.key == key), None)
        method: Any = key
        if spec is not None:
            method = {k: v for k, v in self._selection_settings(spec).items() if k != "run"}
            # how the cell trains, beyond its selection (recorded only when set: older cells stay valid)
            if spec.target_saving:
                method["target_saving"] = True
            if spec.dynamic is not None:
                method["dynamic"] = to_jsonable(spec.dynamic)
        return {"run": to_jsonable(self.description), "method": method}

    def train(self) -> None:
        """Train a fresh model on each coreset (and the full data) per seed; write one result per cell."""
        self.check_model_fits_data()
        cells = self.cells()
        todo = [cell for cell in cells if self._read_cell(*cell) is None]
        if len(todo) < len(cells):
            self.log(f"[train] {len(cells) - len(todo)} of {len(cells)} trainings already done")
        started = time.perf_counter()
        for number, (key, ratio, seed) in enumerate(todo, start=1):
            start = time.perf_counter()
            pl.seed_everything(seed, verbose=False)
            model = self.make_model()
            cell = self._cell_training(key, ratio, seed, model)
            data = cell.data
            meter = CostMeter()
            budget = self.coreset_budget() if cell.selection is not None else []
            trainer = self.make_trainer(
                self.train_epochs,
                [*cell.callbacks, *budget, meter],
                progress=f"[train {number}/{len(todo)}] {key} r{ratio:.2f} s{seed}",
            )
            trainer.fit(model, datamodule=data)
            fit_metrics = dict(trainer.callback_metrics)
            metrics = _test(trainer, model, data)
            if "test_acc" not in metrics:
                raise ValueError(
                    f"The model's test_step logged {sorted(metrics)} but no 'test_acc'; the report compares test "
                    "accuracy. Log it as lightning_prune.models.Classifier does."
                )
            if not 0.0 <= float(metrics["test_acc"]) <= 1.0:
                raise ValueError(
                    f"The model's test_step logged test_acc={float(metrics['test_acc'])}, outside [0, 1]; the report "
                    "reads it as a fraction of the test set. Log the accuracy as a fraction, not in percent."
                )
            selected = cell.selection
            result = {
                "method": key,
                "prune_ratio": ratio,
                **{
                    name: round(value, 6) if isinstance(value, float) else value
                    for name, value in cell.record().items()
                },
                "seed": seed,
                "test_acc": float(metrics["test_acc"]),
                # the last epoch's validation accuracy, when the model logs one: what tuning may look at
                **({"val_acc": float(val_acc)} if (val_acc := fit_metrics.get("val_acc")) is not None else {}),
                "num_train": None if selected is None else len(selected),
                "seconds": round(time.perf_counter() - start, 2),
                **{f"train_{name}": value for name, value in meter.record().items()},
                "made_under": self.cell_identity(key),
            }
            write_text_atomic(self.cell_path(key, ratio, seed), json.dumps(result, indent=2))
            elapsed = time.perf_counter() - started
            eta = elapsed / number * (len(todo) - number)
            self.log(
                f"[train {number}/{len(todo)}] {key:>20} ratio {ratio:.2f} seed {seed}: "
                f"test_acc {result['test_acc']:.4f} ({result['seconds']:.1f} s, ETA {eta:.0f} s)"
            )

    def coreset_budget(self) -> list[pl.Callback]:
        """Under ``budget: steps`` a static coreset trains the full-data training's optimiser steps."""
        if self.budget != "steps":
            return []
        num_samples, _ = self.training_set_facts()
        return [StepBudget(num_samples, self.train_epochs)]

    def _cell_training(self, key: str, ratio: float, seed: int, model: pl.LightningModule) -> CellTraining:
        data = self.make_data()
        if key == FULL:
            return CellTraining(data)
        if key == RANDOM:
            return static_training(self.context, RANDOM, ratio, seed, data, per_seed=True)
        if key == FULL_BUDGET:
            num_samples, _ = self.training_set_facts()
            steps = StepBudget(num_to_keep(num_samples, ratio), self.train_epochs)
            return CellTraining(data, callbacks=[steps], record=lambda: {"max_steps": steps.max_steps})
        if key == RS2:
            rs2 = RS2Callback(prune_ratio=ratio, seed=seed)
            return CellTraining(
                rs2.wrap(data),
                callbacks=[rs2],
                record=lambda: {"dynamic": True, "fraction_skipped": rs2.fraction_skipped},
            )
        spec = next(spec for spec in self.methods if spec.key == key)
        return method_for(spec.name).training(self.context, spec, ratio, seed, data, model)

    def _read_cell(self, key: str, ratio: float, seed: int) -> dict[str, Any] | None:
        """A finished cell's result; ``None`` when missing, or unreadable (then it is trained again).

        A cell made under other settings (or by a version that did not record them) is refused, naming
        each setting with its old and new value: reusing it would report another study's result."""
        path = self.cell_path(key, ratio, seed)
        if not path.exists():
            return None
        result = read_json(path)
        if result is None or not _complete_cell(result):
            self.log(f"[train] {path} is unreadable (damaged or incomplete); training that cell again.")
            return None
        identity = self.cell_identity(key)
        if result.get("made_under") != identity:
            changed = differences(result.get("made_under", {}), identity)
            raise ValueError(
                f"{path} was trained under other settings ({'; '.join(changed)}). Resuming would mix results of "
                f"two set-ups: restore those settings, delete {path.parent} to train every cell again, or choose "
                "another output_dir."
            )
        return result

    def results(self) -> list[dict[str, Any]]:
        return [result for cell in self.cells() if (result := self._read_cell(*cell)) is not None]
