"""What a pipeline method sees of the run: :class:`RunContext`, its files (:class:`RunFiles`), the spec of
a method (:class:`MethodSpec`) and how one coreset training is set up (:class:`CellTraining`).

Methods (``methods.py``, ``validated.py``) are written against this small, named interface and never
against :class:`~lightning_prune.pipeline.runner.PruningRun`: the runner builds one context and hands it
to them, so the runner may change without its methods noticing, and the import graph has no loop
(``runner -> methods -> validated -> context``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl

from lightning_prune.pipeline.cost import CostFile, cost_path
from lightning_prune.pipeline.names import ratio_tag, scoring_checkpoint_name, scoring_cost_name, selection_cost_name
from lightning_prune.selection.selection import Selection


@dataclass
class MethodSpec:
    """One pruning method of a run.

    Attributes:
        name: a collector name (``tdds``, ``forgetting``, ``el2n``, ...), ``adapruner``, ``influence``,
            ``infobatch`` or ``seta`` (dynamic: each ratio is the method's ``prune_ratio``, or with
            ``target_saving`` its target saving).
        args: keyword arguments of the collector / ``AdaPruner`` / ``InfluencePruner`` / ``InfoBatch`` /
            ``SeTa``.
        strategy: selection strategy for score-based methods (default: the run's ``strategy``).
        label: the name shown in the report and used in the run's file names (default: ``name``; set it
            to run one method twice). Letters, digits, ``.``, ``_`` and ``-`` only.
        select_args: further keyword arguments of :func:`~lightning_prune.select` (e.g. ``ccs_beta``).
        prune_ratios: the ratios this method is run at (default: all of the run's). Papers tune some
            methods per ratio (TDDS's trajectory and window): list one labelled method per setting.
        score_epochs: score-based methods only: the length of the scoring run this method reads
            (default: the run's ``score_epochs``). A shorter run makes the method cheaper (EL2N from
            the first epochs, TDDS on a short trajectory, "Selection via Proxy"); methods with the same
            length share one scoring run, and each is charged the run it reads.
        target_saving: dynamic methods only: read the ratios as the fraction of the fit's sample
            presentations to skip (``target_saving=`` of the callback) instead of its ``prune_ratio``;
            the report marks such rows "(target saving)".
        dynamic: static methods only: train each coreset with a dynamic method on top, given as
            ``{name: infobatch | seta | rs2, args: {...}}`` (``args`` as the callback takes them, e.g.
            ``target_saving: 0.3``; the run sets the seed). The cell's training cost is what the
            dynamic training forwarded, so the cost table charges the selection and the pruned training.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    strategy: str | None = None
    label: str | None = None
    select_args: dict[str, Any] = field(default_factory=dict)
    prune_ratios: list[float] | None = None
    score_epochs: int | None = None
    target_saving: bool = False
    dynamic: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.name if self.label is None else self.label


@dataclass
class CellTraining:
    """How one coreset training of a cell is set up, and what it reports afterwards.

    Attributes:
        data: the data module the cell trains on.
        callbacks: callbacks the cell's training needs besides the run's own.
        selection: the static selection trained on, if any.
        record: after the fit, what the cell adds to its result: ``prune_ratio_reached`` (the fraction
            of the training set a static selection removed) or, for a dynamic method,
            ``fraction_skipped`` (the fraction of sample presentations its training skipped).
    """

    data: pl.LightningDataModule
    callbacks: list[pl.Callback] = field(default_factory=list)
    selection: Selection | None = None
    record: Callable[[], dict[str, Any]] = dict


@dataclass(frozen=True)
class RunFiles:
    """Where a run keeps each artefact (see :mod:`lightning_prune.pipeline.runner` for the layout)."""

    run_dir: Path

    def score_path(self, key: str) -> Path:
        return self.run_dir / "scores" / f"{key}.npz"

    def mislabelled_path(self, key: str) -> Path:
        """The samples method ``key``'s scores find most likely mislabelled, next to its score file."""
        return self.run_dir / "scores" / f"{key}.mislabelled.json"

    def selection_path(self, key: str, ratio: float, seed: int | None = None) -> Path:
        suffix = f"-s{seed}" if seed is not None else ""
        return self.run_dir / "selections" / f"{key}-{ratio_tag(ratio)}{suffix}.npz"

    def cell_path(self, key: str, ratio: float, seed: int) -> Path:
        return self.run_dir / "cells" / f"{key}-{ratio_tag(ratio)}-s{seed}.json"

    def scoring_checkpoints(self, epochs: int) -> Path:
        """The folder of the ``epochs``-epoch scoring run's checkpoint (removed once its scores are written)."""
        return self.run_dir / "checkpoints" / scoring_checkpoint_name(epochs)

    def scoring_cost(self, key: str, paid_for: tuple[Path, ...]) -> CostFile:
        """The scoring run's cost charged to method ``key``; ``paid_for``: what that run made for it."""
        return CostFile(cost_path(self.run_dir, scoring_cost_name(key)), paid_for)

    def selection_cost(self, key: str, ratio: float | None, paid_for: tuple[Path, ...]) -> CostFile:
        """What method ``key`` trained or computed to select (at ``ratio``, or once for all: ``None``)."""
        return CostFile(cost_path(self.run_dir, selection_cost_name(key, ratio)), paid_for)


class TrainerFactory(Protocol):
    """``make_trainer(max_epochs, callbacks, progress=...)``: a fresh ``Trainer`` with the run's settings;
    ``progress`` prefixes the epoch progress lines of a long training."""

    def __call__(
        self, max_epochs: int, callbacks: list[pl.Callback] | None = None, progress: str | None = None, **overrides: Any
    ) -> pl.Trainer: ...


@dataclass(frozen=True)
class RunContext:
    """The run, as a pipeline method sees it.

    Attributes:
        files: where the run's artefacts and cost records live.
        make_model: a fresh, untrained model.
        make_data: a fresh data module of the full data set.
        make_trainer: a fresh ``Trainer`` with the run's settings.
        training_set_facts: ``(N, labels in index order)`` of the full training set.
        log: progress lines (rank 0 only).
        score_seed: the seed of every selection and of the scoring run.
        score_epochs: the run's scoring-run length (a method's default training length).
        train_epochs: the length of every coreset training.
        coreset_budget: the callbacks a static coreset's training adds under the run's ``budget`` (under
            ``steps``: the full-data training's optimiser steps); a validated selection's candidates train so.
        weighted: whether coresets train with importance weights.
        scoring_model: the model the run-length scoring run trained in this process (``None`` before).
        cache: per method key, what a method computes once and reuses for every ratio.
        budget: how every static coreset trains, ``"epochs"`` or ``"steps"`` (``strategy: auto`` reads it).
    """

    files: RunFiles
    make_model: Callable[[], pl.LightningModule]
    make_data: Callable[[], pl.LightningDataModule]
    make_trainer: TrainerFactory
    training_set_facts: Callable[[], tuple[int, Any]]
    log: Callable[[str], None]
    score_seed: int
    score_epochs: int
    train_epochs: int
    coreset_budget: Callable[[], list[pl.Callback]]
    weighted: bool
    scoring_model: Callable[[], pl.LightningModule | None]
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget: str = "epochs"
