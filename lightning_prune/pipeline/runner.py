"""The whole job in one object: score -> select -> train on each coreset -> report.

A run lives in one directory::

    RUN_DIR/
      run.json                   what the run is (data, model, epochs, trainer); checked on re-runs
      scores/METHOD.npz          one score file per scoring method (with manifest)
      selections/METHOD-rR.npz   one selection per method and pruning ratio (with manifest)
      cells/METHOD-rR-sS.json    one result per (method, ratio, seed): test accuracy, size, time
      report.json, plots/*.png   written by the report step

Every artefact is written atomically when its step finishes and skipped when it already exists, so
re-running the same command resumes where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np

from lightning_prune.collectors.registry import COLLECTORS, make_collector
from lightning_prune.data.indexed import dataset_targets
from lightning_prune.data.pruned import PrunedDataModule
from lightning_prune.selection.files import to_jsonable, write_text_atomic
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection
from lightning_prune.selection.strategies import STRATEGIES, check_prune_ratio, random_selection, select

FULL = "full"
RANDOM = "random"
LEARNED_METHODS = ("adapruner", "influence")  # produce a Selection per ratio rather than Scores


@dataclass
class MethodSpec:
    """One pruning method of a run.

    Attributes:
        name: a collector name (``tdds``, ``forgetting``, ``el2n``, ...), ``adapruner`` or ``influence``.
        args: keyword arguments of the collector / ``AdaPruner`` / ``InfluencePruner``.
        strategy: selection strategy for score-based methods (default: the run's ``strategy``).
        label: the name shown in the report (default: ``name``; set it to run one method twice).
        select_args: further keyword arguments of :func:`~lightning_prune.select` (e.g. ``ccs_beta``).
        prune_ratios: the ratios this method is run at (default: all of the run's). Papers tune some
            methods per ratio (TDDS's trajectory and window): list one labelled method per setting.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    strategy: str | None = None
    label: str | None = None
    select_args: dict[str, Any] = field(default_factory=dict)
    prune_ratios: list[float] | None = None

    @property
    def key(self) -> str:
        return self.label or self.name


def ratio_label(ratio: float) -> str:
    """``0.5 -> "0.50"``, ``0.995 -> "0.995"``: two decimals unless the ratio needs more, so no two
    ratios share a file name or a report key."""
    return f"{ratio:.2f}" if round(ratio, 2) == ratio else f"{ratio:g}"


def ratio_tag(ratio: float) -> str:
    return f"r{ratio_label(ratio)}"


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
        log: where progress lines go.
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
    ) -> None:
        if not methods:
            raise ValueError("A run needs at least one method; list them under `methods:`.")
        labels = [m.key for m in methods]
        if len(set(labels)) != len(labels) or {FULL, RANDOM} & set(labels):
            raise ValueError(
                f"Method labels must be unique and not {FULL!r}/{RANDOM!r} (added automatically); got {labels}. "
                "Give repeated methods distinct `label:`s."
            )
        known = sorted(COLLECTORS) + list(LEARNED_METHODS)
        for spec in methods:
            if spec.name not in known:
                raise ValueError(f"Unknown method {spec.name!r}; choose from {known}.")
            if spec.name not in LEARNED_METHODS and (spec.strategy or strategy) not in STRATEGIES:
                raise ValueError(f"Unknown strategy {spec.strategy or strategy!r} for {spec.key}; choose from {sorted(STRATEGIES)}.")
        for ratio in [*prune_ratios, *(r for spec in methods for r in spec.prune_ratios or [])]:
            check_prune_ratio(ratio)
        if not seeds:
            raise ValueError("seeds must list at least one seed.")
        if score_epochs < 1 or train_epochs < 1:
            raise ValueError(f"score_epochs and train_epochs must be >= 1; got {score_epochs} and {train_epochs}.")
        self.run_dir = Path(run_dir)
        self.make_data = make_data
        self.make_model = make_model
        self.methods = methods
        self.prune_ratios = sorted(float(r) for r in prune_ratios)
        self.seeds = [int(s) for s in seeds]
        self.score_epochs = score_epochs
        self.train_epochs = train_epochs
        self.strategy = strategy
        self.trainer_args = dict(trainer_args or {})
        self.description = {
            **(description or {}),
            "score_epochs": score_epochs,
            "train_epochs": train_epochs,
            "trainer": self.trainer_args,
            "weighted": weighted,
        }
        self.weighted = weighted
        self.log = log
        self._trained_scoring_model: pl.LightningModule | None = None
        self._influence: dict[str, Any] = {}

    @property
    def all_ratios(self) -> list[float]:
        """The run's ratios and every method's own: the random baseline runs at each."""
        return sorted({*self.prune_ratios, *(float(r) for spec in self.methods for r in spec.prune_ratios or [])})

    def ratios_for(self, spec: MethodSpec) -> list[float]:
        return sorted(float(r) for r in spec.prune_ratios) if spec.prune_ratios else self.prune_ratios

    # ------------------------------------------------------------------ paths
    def score_path(self, spec: MethodSpec) -> Path:
        return self.run_dir / "scores" / f"{spec.key}.npz"

    def selection_path(self, key: str, ratio: float, seed: int | None = None) -> Path:
        suffix = f"-s{seed}" if seed is not None else ""
        return self.run_dir / "selections" / f"{key}-{ratio_tag(ratio)}{suffix}.npz"

    def cell_path(self, key: str, ratio: float, seed: int) -> Path:
        return self.run_dir / "cells" / f"{key}-{ratio_tag(ratio)}-s{seed}.json"

    # ------------------------------------------------------------------ steps
    def run(self) -> dict[str, Any]:
        """Every step, resuming; returns the report."""
        from lightning_prune.pipeline.report import write_report

        self.check_run_dir()
        self.score()
        self.select()
        self.train()
        return write_report(self, log=self.log)

    def check_run_dir(self) -> None:
        marker = self.run_dir / "run.json"
        fingerprint = hashlib.sha256(json.dumps(self.description, sort_keys=True, default=str).encode()).hexdigest()[:16]
        if marker.exists():
            previous = json.loads(marker.read_text())
            if previous.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{self.run_dir} holds a run with other data/model/epoch settings ({marker}). Resuming would mix "
                    "results of two set-ups: choose another output_dir, or delete that directory to start over."
                )
            self.log(f"Resuming the run in {self.run_dir}: finished steps are skipped.")
        else:
            write_text_atomic(marker, json.dumps({"fingerprint": fingerprint, "description": self.description},
                                                  indent=2, sort_keys=True, default=str))

    def _trainer(self, max_epochs: int, callbacks: list[pl.Callback] | None = None, **overrides: Any) -> pl.Trainer:
        args = {
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            **self.trainer_args,
            **overrides,
        }
        return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks or [], **args)

    def score_methods(self) -> list[MethodSpec]:
        return [spec for spec in self.methods if spec.name not in LEARNED_METHODS]

    def score(self, train_for_influence: bool = True) -> dict[str, Scores]:
        """Train once on the full data with every missing collector attached; write the score files.

        The influence method needs that trained model too; ``train_for_influence=False`` skips the
        training when only the influence model is missing (``lightning-prune score``).
        """
        specs = self.score_methods()
        for spec in specs:
            if self.score_path(spec).exists():
                self._check_reused_scores(spec)
        missing = [spec for spec in specs if not self.score_path(spec).exists()]
        needs_model = (train_for_influence and any(spec.name == "influence" for spec in self.methods)
                       and self._influence_missing())
        if missing or needs_model:
            collectors = {spec.key: make_collector(spec.name, **spec.args) for spec in missing}
            names = ", ".join(collectors) or "none (training the model the influence method needs)"
            self.log(f"[score] training on the full data for {self.score_epochs} epochs with collectors: {names}")
            pl.seed_everything(self.seeds[0], verbose=False)
            model, data = self.make_model(), self.make_data()
            start = time.perf_counter()
            self._trainer(self.score_epochs, list(collectors.values())).fit(model, datamodule=data)
            self._trained_scoring_model = model
            for key, collector in collectors.items():
                path = collector.scores.save(self.run_dir / "scores" / f"{key}.npz")
                self.log(f"[score] wrote {path} ({time.perf_counter() - start:.1f} s)")
        return {spec.key: Scores.load(self.score_path(spec)) for spec in specs}

    def _refuse_reuse(self, path: Path, spec: MethodSpec) -> None:
        raise ValueError(
            f"{path} was made with other settings than method {spec.key!r} has now. Resuming would mix results of "
            "two set-ups: give the changed method a new `label:`, choose another output_dir, or delete the file."
        )

    def _check_reused_scores(self, spec: MethodSpec) -> None:
        path = self.score_path(spec)
        scores, collector = Scores.load(path), make_collector(spec.name, **spec.args)
        if scores.method != collector.method or scores.hparams != to_jsonable(collector.hparams()):
            self._refuse_reuse(path, spec)

    def _selection_settings(self, spec: MethodSpec) -> dict[str, Any]:
        """What a method's selection files depend on besides the ratio (recorded in them, checked on reuse)."""
        return to_jsonable({
            "name": spec.name,
            "args": spec.args,
            "strategy": None if spec.name in LEARNED_METHODS else spec.strategy or self.strategy,
            "select_args": spec.select_args,
            "weighted": self.weighted,
            "seed": self.seeds[0],
        })

    def _influence_missing(self) -> bool:
        return any(not self.selection_path(spec.key, r).exists()
                   for spec in self.methods if spec.name == "influence" for r in self.ratios_for(spec))

    def select(self) -> None:
        """Write every selection file that is missing (score-based, learned and random)."""
        data = self.make_data()
        data.setup("fit")
        train_set = data.train_dataloader().dataset
        labels = dataset_targets(train_set)
        num_samples = len(train_set)
        for spec in self.methods:
            for ratio in self.ratios_for(spec):
                path = self.selection_path(spec.key, ratio)
                settings = self._selection_settings(spec)
                if path.exists():
                    if Selection.load(path).hparams.get("run_settings") != settings:
                        self._refuse_reuse(path, spec)
                    continue
                start = time.perf_counter()
                if spec.name == "adapruner":
                    selection = self._adapruner_selection(spec, ratio)
                elif spec.name == "influence":
                    selection = self._influence_selection(spec, ratio)
                else:
                    scores = Scores.load(self.score_path(spec))
                    scores.check_dataset(num_samples, labels)
                    selection = select(scores, ratio, strategy=spec.strategy or self.strategy, seed=self.seeds[0],
                                       weights="importance" if self.weighted else None, **spec.select_args)
                selection.hparams["run_settings"] = settings
                selection.save(path)
                self.log(f"[select] {spec.key} at prune ratio {ratio:.2f}: kept {len(selection)} of "
                         f"{selection.num_samples} ({time.perf_counter() - start:.1f} s)")
        for ratio in self.all_ratios:
            for seed in self.seeds:
                path = self.selection_path(RANDOM, ratio, seed)
                if not path.exists():
                    random_selection(num_samples, ratio, seed=seed, labels=labels).save(path)

    def _adapruner_selection(self, spec: MethodSpec, ratio: float) -> Selection:
        from lightning_prune.adapruner import AdaPruner

        args = dict(spec.args)
        epochs = int(args.pop("epochs", self.score_epochs))
        pl.seed_everything(self.seeds[0], verbose=False)
        backbone = getattr(self.make_model(), "backbone", None)
        if backbone is None:
            raise ValueError("The adapruner method needs a model with a `backbone` attribute (as Classifier has).")
        data = self.make_data()
        data.setup("fit")
        num_samples = len(data.train_dataloader().dataset)
        self.log(f"[select] adapruner: learning a mask keeping {1 - ratio:.2f} for {epochs} epochs")
        pruner = AdaPruner(backbone, num_samples=num_samples, keep_ratio=1.0 - ratio, **args)
        self._trainer(epochs).fit(pruner, datamodule=data)
        return pruner.selection()

    def _influence_selection(self, spec: MethodSpec, ratio: float) -> Selection:
        from lightning_prune.influence import InfluencePruner

        if spec.key not in self._influence:
            if self._trained_scoring_model is None:
                raise RuntimeError("internal: the influence method needs the scoring run's model")  # score() trains it
            pruner = InfluencePruner(**spec.args)
            self.log(f"[select] {spec.key}: last-layer influence of every training sample")
            self._influence[spec.key] = (pruner, pruner.influence(self._trained_scoring_model, self.make_data()))
        pruner, vectors = self._influence[spec.key]  # computed once, solved for every ratio
        self.log(f"[select] {spec.key}: solving for prune ratio {ratio:.2f}")
        return pruner.select_from(vectors, prune_ratio=ratio)

    def cells(self) -> list[tuple[str, float, int]]:
        cells = [(FULL, 0.0, seed) for seed in self.seeds]
        cells += [(spec.key, ratio, seed) for spec in self.methods for ratio in self.ratios_for(spec) for seed in self.seeds]
        cells += [(RANDOM, ratio, seed) for ratio in self.all_ratios for seed in self.seeds]
        return cells

    def train(self) -> None:
        """Train a fresh model on each coreset (and the full data) per seed; write one result per cell."""
        cells = self.cells()
        todo = [cell for cell in cells if not self.cell_path(*cell).exists()]
        if len(todo) < len(cells):
            self.log(f"[train] {len(cells) - len(todo)} of {len(cells)} trainings already done")
        for number, (key, ratio, seed) in enumerate(todo, start=1):
            start = time.perf_counter()
            pl.seed_everything(seed, verbose=False)
            model, data = self.make_model(), self.make_data()
            if key != FULL:
                selection = Selection.load(self.selection_path(key, ratio, seed if key == RANDOM else None))
                # learned methods (adapruner, influence) and random pruning produce no importance weights
                weighted = self.weighted and selection.weights is not None
                data = PrunedDataModule(data, selection, weighted=weighted, seed=seed)
            trainer = self._trainer(self.train_epochs)
            trainer.fit(model, datamodule=data)
            metrics = trainer.test(model, datamodule=data, verbose=False)[0]
            if "test_acc" not in metrics:
                raise ValueError(
                    f"The model's test_step logged {sorted(metrics)} but no 'test_acc'; the report compares test "
                    "accuracy. Log it as lightning_prune.models.Classifier does."
                )
            result = {
                "method": key,
                "prune_ratio": ratio,
                "seed": seed,
                "test_acc": float(metrics["test_acc"]),
                "num_train": len(data.selection) if isinstance(data, PrunedDataModule) else None,
                "seconds": round(time.perf_counter() - start, 2),
            }
            write_text_atomic(self.cell_path(key, ratio, seed), json.dumps(result, indent=2))
            self.log(f"[train {number}/{len(todo)}] {key:>20} ratio {ratio:.2f} seed {seed}: "
                     f"test_acc {result['test_acc']:.4f} ({result['seconds']:.1f} s)")

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(self.cell_path(*cell).read_text()) for cell in self.cells() if self.cell_path(*cell).exists()]


def scores_for_report(run: PruningRun) -> dict[str, np.ndarray]:
    return {spec.key: Scores.load(run.score_path(spec)).values for spec in run.score_methods()
            if run.score_path(spec).exists()}
