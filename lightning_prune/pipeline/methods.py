"""How the pipeline runs each kind of pruning method: one protocol instead of name checks.

A method of a run is *score-based* (a collector attached to the scoring run, then a selection
strategy per ratio), *learned* (it produces a :class:`Selection` per ratio itself: AdaPruner trains
a mask, influence pruning solves an optimisation over the scoring run's model) or *dynamic* (no
selection: each coreset training prunes inside itself, as InfoBatch does). The runner asks the
method what it needs and hands it the run; a new kind of method is one more class registered in
:data:`LEARNED`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import lightning.pytorch as pl

from lightning_prune.collectors.base import ScoreCollector
from lightning_prune.collectors.registry import COLLECTORS, make_collector
from lightning_prune.data.pruned import PrunedDataModule
from lightning_prune.dynamic.infobatch import InfoBatch
from lightning_prune.pipeline.cost import CostMeter, write_cost
from lightning_prune.pipeline.names import RANDOM, ratio_tag
from lightning_prune.pipeline.validated import VALIDATE, validated_selection
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection
from lightning_prune.selection.strategies import select

if TYPE_CHECKING:
    from lightning_prune.pipeline.runner import PruningRun


@dataclass
class MethodSpec:
    """One pruning method of a run.

    Attributes:
        name: a collector name (``tdds``, ``forgetting``, ``el2n``, ...), ``adapruner``, ``influence`` or
            ``infobatch`` (dynamic: each ratio is InfoBatch's ``prune_ratio``).
        args: keyword arguments of the collector / ``AdaPruner`` / ``InfluencePruner`` / ``InfoBatch``.
        strategy: selection strategy for score-based methods (default: the run's ``strategy``).
        label: the name shown in the report (default: ``name``; set it to run one method twice).
        select_args: further keyword arguments of :func:`~lightning_prune.select` (e.g. ``ccs_beta``).
        prune_ratios: the ratios this method is run at (default: all of the run's). Papers tune some
            methods per ratio (TDDS's trajectory and window): list one labelled method per setting.
        score_epochs: score-based methods only: the length of the scoring run this method reads
            (default: the run's ``score_epochs``). A shorter run makes the method cheaper (EL2N from
            the first epochs, TDDS on a short trajectory, "Selection via Proxy"); methods with the same
            length share one scoring run, and each is charged the run it reads.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    strategy: str | None = None
    label: str | None = None
    select_args: dict[str, Any] = field(default_factory=dict)
    prune_ratios: list[float] | None = None
    score_epochs: int | None = None

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass
class CellTraining:
    """How one coreset training of a cell is set up, and what it reports afterwards.

    Attributes:
        data: the data module the cell trains on.
        callbacks: callbacks the cell's training needs besides the run's own.
        selection: the static selection trained on, if any.
        reached: after the fit, the fraction of the training set's sample presentations the cell skipped.
    """

    data: pl.LightningDataModule
    callbacks: list[pl.Callback] = field(default_factory=list)
    selection: Selection | None = None
    reached: Callable[[], float] = lambda: 0.0
    dynamic: bool = False


def static_training(
    run: PruningRun, key: str, ratio: float, seed: int, data: pl.LightningDataModule, per_seed: bool = False
) -> CellTraining:
    """A training (seeded ``seed``) on the saved selection of ``key`` at ``ratio``; ``per_seed``: each seed has its
    own selection (the random baseline)."""
    selection = Selection.load(run.selection_path(key, ratio, seed if per_seed else None))
    if selection.hparams.get("validated", {}).get("chosen") == RANDOM:
        # validation found no candidate better than random: the method is random pruning at this ratio,
        # and trains on the random baseline's subset of this seed (a different draw would only add noise)
        selection = Selection.load(run.selection_path(RANDOM, ratio, seed))
    # learned methods (adapruner, influence) and random pruning produce no importance weights
    weighted = run.weighted and selection.weights is not None
    pruned = PrunedDataModule(data, selection, weighted=weighted, seed=seed)
    return CellTraining(pruned, selection=selection, reached=lambda: selection.prune_ratio)


class Method(Protocol):
    """What the runner needs to know of a kind of method, how it gets a selection and how its cells train."""

    uses_scores: ClassVar[bool]
    """A collector scores it during the scoring run; a strategy then selects from the scores."""
    needs_scoring_model: ClassVar[bool]
    """It reads the model the scoring run trained."""
    makes_selection: ClassVar[bool]
    """It writes a selection file per ratio (dynamic methods do not)."""

    def check(self, spec: MethodSpec, ratios: list[float]) -> None:
        """Refuse settings the method cannot run with, before anything is trained."""

    def collector(self, spec: MethodSpec) -> ScoreCollector | None:
        """The collector to attach to the scoring run, if the method has one."""

    def selection(self, run: PruningRun, spec: MethodSpec, ratio: float) -> Selection:
        """The method's selection at ``ratio`` (the runner records and saves it)."""

    def cost_names(self, spec: MethodSpec, ratio: float) -> list[str]:
        """The recorded costs (``RUN/costs/NAME.json``) a selection at ``ratio`` paid before its coreset training."""

    def training(
        self,
        run: PruningRun,
        spec: MethodSpec,
        ratio: float,
        seed: int,
        data: pl.LightningDataModule,
        model: pl.LightningModule,
    ) -> CellTraining:
        """How the coreset training of ``spec`` at ``ratio`` seeded ``seed`` runs, on the full data module ``data``."""


class SelectionMethod:
    """Defaults of a method that writes a selection per ratio and trains on it (all but dynamic ones)."""

    uses_scores: ClassVar[bool] = False
    needs_scoring_model: ClassVar[bool] = False
    makes_selection: ClassVar[bool] = True

    def check(self, spec: MethodSpec, ratios: list[float]) -> None:
        return None

    def training(
        self,
        run: PruningRun,
        spec: MethodSpec,
        ratio: float,
        seed: int,
        data: pl.LightningDataModule,
        model: pl.LightningModule,
    ) -> CellTraining:
        return static_training(run, spec.key, ratio, seed, data)


class ScoreBased(SelectionMethod):
    """A collector of :data:`~lightning_prune.COLLECTORS` and a selection strategy."""

    uses_scores: ClassVar[bool] = True

    def check(self, spec: MethodSpec, ratios: list[float]) -> None:
        if spec.select_args.get(VALIDATE) and spec.strategy != "auto":
            raise ValueError(
                f"Method {spec.key!r}: select_args.validate chooses among the ratio-aware candidates of "
                f"strategy 'auto' (dual, ccs, easy, random); set `strategy: auto` on the method (it has {spec.strategy!r})."
            )

    def collector(self, spec: MethodSpec) -> ScoreCollector:
        # a labelled collector is named after its label, so that the same collector listed twice under
        # two labels gets two state keys (Lightning refuses two stateful callbacks with one key)
        args = {"name": spec.label, **spec.args} if spec.label else dict(spec.args)
        return make_collector(spec.name, **args)

    def cost_names(self, spec: MethodSpec, ratio: float) -> list[str]:
        if spec.select_args.get(VALIDATE):
            return [scoring_cost_name(spec), validation_cost_name(spec, ratio)]
        return [scoring_cost_name(spec)]

    def selection(self, run: PruningRun, spec: MethodSpec, ratio: float) -> Selection:
        scores = Scores.load(run.score_path(spec))
        num_samples, labels = run.training_set_facts()
        scores.check_dataset(num_samples, labels)
        if spec.select_args.get(VALIDATE):
            return validated_selection(run, spec, ratio, scores, validation_cost_name(spec, ratio))
        return select(
            scores,
            ratio,
            strategy=spec.strategy or run.strategy,
            seed=run.score_seed,
            weights="importance" if run.weighted else None,
            **spec.select_args,
        )


class AdaPrunerMethod(SelectionMethod):
    """AdaPruner: a mask learned with the backbone, one training per ratio (``args.epochs``)."""

    def collector(self, spec: MethodSpec) -> None:
        return None

    def cost_names(self, spec: MethodSpec, ratio: float) -> list[str]:
        return [f"select-{spec.key}-{ratio_tag(ratio)}"]

    def selection(self, run: PruningRun, spec: MethodSpec, ratio: float) -> Selection:
        from lightning_prune.adapruner import AdaPruner

        args = dict(spec.args)
        epochs = int(args.pop("epochs", run.score_epochs))
        pl.seed_everything(run.score_seed, verbose=False)
        backbone = getattr(run.make_model(), "backbone", None)
        if backbone is None:
            raise ValueError("The adapruner method needs a model with a `backbone` attribute (as Classifier has).")
        num_samples, _ = run.training_set_facts()
        run.log(f"[select] {spec.key}: learning a mask keeping {1 - ratio:.2f} for {epochs} epochs")
        pruner = AdaPruner(backbone, num_samples=num_samples, keep_ratio=1.0 - ratio, **args)
        meter = CostMeter()
        trainer = run.make_trainer(epochs, [meter], progress=f"[select] {spec.key} r{ratio:.2f}")
        trainer.fit(pruner, datamodule=run.make_data())
        write_cost(run.run_dir, self.cost_names(spec, ratio)[0], meter.record())
        return pruner.selection()


class InfluenceMethod(SelectionMethod):
    """Influence-based pruning on the scoring run's model: influence computed once, solved per ratio."""

    needs_scoring_model: ClassVar[bool] = True

    def collector(self, spec: MethodSpec) -> None:
        return None

    def cost_names(self, spec: MethodSpec, ratio: float) -> list[str]:
        return [scoring_cost_name(spec), f"select-{spec.key}"]

    def selection(self, run: PruningRun, spec: MethodSpec, ratio: float) -> Selection:
        from lightning_prune.influence import InfluencePruner

        cache = run.method_cache.setdefault(spec.key, {})
        if "vectors" not in cache:
            model = run.trained_scoring_model
            if model is None:
                raise RuntimeError("internal: the influence method needs the scoring run's model")  # score() trains it
            cache["pruner"] = InfluencePruner(**spec.args)
            run.log(f"[select] {spec.key}: last-layer influence of every training sample")
            start = time.perf_counter()
            cache["vectors"] = cache["pruner"].influence(model, run.make_data())
            # one inference pass over the training set, counted as one forward per sample
            num_samples, _ = run.training_set_facts()
            record = {"samples_forwarded": num_samples, "epochs": 0, "seconds": round(time.perf_counter() - start, 2)}
            write_cost(run.run_dir, f"select-{spec.key}", record)
        run.log(f"[select] {spec.key}: solving for prune ratio {ratio:.2f}")
        return cache["pruner"].select_from(cache["vectors"], prune_ratio=ratio)


class InfoBatchMethod:
    """InfoBatch: no selection; each coreset training prunes dynamically at ``prune_ratio = ratio``.

    Its cost is its own training (metered like every cell); the cell records the fraction of sample
    presentations it skipped as its ``prune_ratio_reached``.
    """

    uses_scores: ClassVar[bool] = False
    needs_scoring_model: ClassVar[bool] = False
    makes_selection: ClassVar[bool] = False

    def check(self, spec: MethodSpec, ratios: list[float]) -> None:
        for ratio in ratios:
            InfoBatch(prune_ratio=ratio, **spec.args)  # refuses a bad ratio or argument, naming it

    def collector(self, spec: MethodSpec) -> None:
        return None

    def cost_names(self, spec: MethodSpec, ratio: float) -> list[str]:
        return []

    def selection(self, run: PruningRun, spec: MethodSpec, ratio: float) -> Selection:
        raise RuntimeError(f"internal: {spec.key} is dynamic and makes no selection")

    def training(
        self,
        run: PruningRun,
        spec: MethodSpec,
        ratio: float,
        seed: int,
        data: pl.LightningDataModule,
        model: pl.LightningModule,
    ) -> CellTraining:
        from lightning_prune.models.classifier import Classifier

        if isinstance(model, Classifier) and model.hparams["weighted_loss"] != "mean":
            # identical for unweighted batches; InfoBatch's rescaling needs the mean of weight x loss
            model.hparams["weighted_loss"] = "mean"
        infobatch = InfoBatch(prune_ratio=ratio, seed=seed, **spec.args)
        return CellTraining(
            infobatch.wrap(data), callbacks=[infobatch], reached=lambda: infobatch.fraction_skipped, dynamic=True
        )


LEARNED: dict[str, Method] = {
    "adapruner": AdaPrunerMethod(),
    "influence": InfluenceMethod(),
    "infobatch": InfoBatchMethod(),
}
"""Methods that produce a selection per ratio themselves, by name."""
_SCORE_BASED = ScoreBased()


def method_for(name: str) -> Method:
    """The method registered as ``name``: a learned one, or a collector with a strategy."""
    if name in LEARNED:
        return LEARNED[name]
    if name in COLLECTORS:
        return _SCORE_BASED
    raise ValueError(f"Unknown method {name!r}; choose from {known_methods()}.")


def validation_cost_name(spec: MethodSpec, ratio: float) -> str:
    """The recorded cost of the candidate trainings a validated selection at ``ratio`` ran."""
    return f"select-{spec.key}-{ratio_tag(ratio)}"


def scoring_cost_name(spec: MethodSpec) -> str:
    """The recorded cost of the scoring run that served ``spec``."""
    return f"score-{spec.key}"


def known_methods() -> list[str]:
    return sorted(COLLECTORS) + list(LEARNED)
