"""How the pipeline runs each kind of pruning method: one protocol instead of name checks.

A method of a run is *score-based* (a collector of :data:`~lightning_prune.COLLECTORS` attached to
the scoring run, then a selection strategy per ratio), *selecting* (it produces a :class:`Selection`
per ratio itself: AdaPruner trains a mask, influence pruning solves an optimisation over the scoring
run's model; registered in :data:`SELECTING_METHODS`) or *dynamic* (no selection: each coreset
training prunes inside itself, as InfoBatch does; registered in :data:`DYNAMIC_METHODS`). The runner
asks the method what it needs and hands it a :class:`~lightning_prune.pipeline.context.RunContext`; a
new method is one more class registered in one of these tables, with no dispatch to edit.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Protocol

import lightning.pytorch as pl

from lightning_prune.collectors.base import ScoreCollector
from lightning_prune.collectors.registry import COLLECTORS, make_collector
from lightning_prune.data.pruned import PrunedDataModule
from lightning_prune.dynamic.infobatch import InfoBatch
from lightning_prune.dynamic.rs2 import RS2
from lightning_prune.dynamic.seta import SeTa
from lightning_prune.pipeline.context import CellTraining, MethodSpec, RunContext
from lightning_prune.pipeline.cost import CostFile, CostMeter, write_cost
from lightning_prune.pipeline.names import RANDOM, TARGET_SAVING
from lightning_prune.pipeline.validated import VALIDATE, validated_selection
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection
from lightning_prune.selection.strategies import check_select_args as check_strategy_options
from lightning_prune.selection.strategies import select

__all__ = ["DYNAMIC_METHODS", "SELECTING_METHODS", "CellTraining", "Method", "MethodSpec", "method_for"]

SET_BY_THE_RUN = frozenset({"scores", "prune_ratio", "strategy", "seed", "weights"})
"""Arguments of :func:`~lightning_prune.select` the pipeline sets itself (not ``select_args``)."""


def check_select_args(strategy: str, select_args: Mapping[str, Any], *, allowed: Collection[str] = ()) -> None:
    """Refuse ``select_args`` the method's strategy does not take (or bad values), before anything trains.

    ``allowed``: keys the pipeline handles itself (``validate``). The options and their checks are the
    strategy's own (:func:`lightning_prune.selection.check_select_args`); keys the run sets are named as such.
    """
    if not isinstance(select_args, Mapping):
        raise TypeError(f"select_args must map option names to values, got {type(select_args).__name__}.")
    for key in select_args:
        if key in SET_BY_THE_RUN:
            raise ValueError(
                f"select_args key {key!r} is set by the run, not per method: set the run's (or the method's) "
                "`strategy`, `score_seed` or `weighted` instead."
            )
    check_strategy_options(strategy, select_args, allowed=allowed)


DYNAMIC_CALLBACKS: dict[str, type[InfoBatch] | type[RS2]] = {"infobatch": InfoBatch, "seta": SeTa, "rs2": RS2}
"""The dynamic methods a static method's coreset training may run on top (a method's ``dynamic:``), by name."""

DYNAMIC_KEYS = frozenset({"name", "args"})


def check_dynamic_on_top(spec: MethodSpec) -> None:
    """Refuse a bad ``dynamic:`` entry of a static method, naming the setting and the fix."""
    entry = spec.dynamic
    if entry is None:
        return
    where = f"Method {spec.key!r}: dynamic"
    if not isinstance(entry, Mapping) or not set(entry) <= DYNAMIC_KEYS or "name" not in entry:
        raise ValueError(
            f"{where}={entry!r} must be a mapping {{name: {' | '.join(DYNAMIC_CALLBACKS)}, args: {{...}}}} (the "
            "dynamic method each coreset trains with, and its arguments)."
        )
    if entry["name"] not in DYNAMIC_CALLBACKS:
        raise ValueError(f"{where}.name={entry['name']!r} is not one of {sorted(DYNAMIC_CALLBACKS)}.")
    args = entry.get("args") or {}
    if not isinstance(args, Mapping):
        raise ValueError(f"{where}.args must map argument names to values, got {args!r}.")
    if "seed" in args:
        raise ValueError(f"{where}.args sets seed, which the run sets from its `seeds`; remove it.")
    DYNAMIC_CALLBACKS[entry["name"]](**args)  # refuses a bad ratio, target or argument, naming it


def dynamic_on_top(spec: MethodSpec, seed: int) -> InfoBatch | RS2 | None:
    """The dynamic callback a static method's coreset training runs, seeded with the cell's seed (if any)."""
    if spec.dynamic is None:
        return None
    return DYNAMIC_CALLBACKS[spec.dynamic["name"]](seed=seed, **(spec.dynamic.get("args") or {}))


def with_dynamic_on_top(cell: CellTraining, spec: MethodSpec, seed: int) -> CellTraining:
    """``cell`` (a training on a static selection) trained under the method's ``dynamic:`` callback, if it has one.

    The cell records the dynamic method's name and the fraction of the coreset's presentations it
    skipped; its metered cost is what the pruned training forwarded.
    """
    callback = dynamic_on_top(spec, seed)
    if callback is None:
        return cell
    static_record = cell.record

    def record() -> dict[str, Any]:
        return {
            **static_record(),
            "dynamic_on_top": callback.method,
            "dynamic_fraction_skipped": callback.fraction_skipped,
        }

    return CellTraining(callback.wrap(cell.data), [*cell.callbacks, callback], cell.selection, record)


def static_training(
    run: RunContext, key: str, ratio: float, seed: int, data: pl.LightningDataModule, per_seed: bool = False
) -> CellTraining:
    """A training (seeded ``seed``) on the saved selection of ``key`` at ``ratio``; ``per_seed``: each seed has its
    own selection (the random baseline)."""
    selection = Selection.load(run.files.selection_path(key, ratio, seed if per_seed else None))
    if selection.hparams.get("validated", {}).get("chosen") == RANDOM:
        # validation found no candidate better than random: the method is random pruning at this ratio,
        # and trains on the random baseline's subset of this seed (a different draw would only add noise)
        selection = Selection.load(run.files.selection_path(RANDOM, ratio, seed))
    # learned methods (adapruner, influence) and random pruning produce no importance weights
    weighted = run.weighted and selection.weights is not None
    pruned = PrunedDataModule(data, selection, weighted=weighted, seed=seed)
    return CellTraining(pruned, selection=selection, record=lambda: {"prune_ratio_reached": selection.prune_ratio})


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

    def selection(self, run: RunContext, spec: MethodSpec, ratio: float) -> Selection:
        """The method's selection at ``ratio`` (the runner records and saves it)."""

    def costs(self, run: RunContext, spec: MethodSpec, ratio: float) -> list[CostFile]:
        """The recorded costs a selection at ``ratio`` paid before its coreset training."""

    def training(
        self,
        run: RunContext,
        spec: MethodSpec,
        ratio: float,
        seed: int,
        data: pl.LightningDataModule,
        model: pl.LightningModule,
    ) -> CellTraining:
        """How the coreset training of ``spec`` at ``ratio`` seeded ``seed`` runs, on the full data module ``data``."""


def refuse_selection_settings(spec: MethodSpec) -> None:
    """A method that reads no scores takes no selection strategy: refuse the settings it would ignore."""
    for setting, value in (("strategy", spec.strategy), ("select_args", spec.select_args)):
        if value:
            raise ValueError(
                f"Method {spec.key!r} ({spec.name}) sets `{setting}`, but only score-based methods select with a "
                f"strategy; {spec.name} would ignore it. Remove `{setting}` from the method."
            )


class SelectionMethod:
    """Defaults of a method that writes a selection per ratio and trains on it (all but dynamic ones)."""

    uses_scores: ClassVar[bool] = False
    needs_scoring_model: ClassVar[bool] = False
    makes_selection: ClassVar[bool] = True

    def check(self, spec: MethodSpec, ratios: list[float]) -> None:
        refuse_selection_settings(spec)

    def collector(self, spec: MethodSpec) -> ScoreCollector | None:
        return None

    def costs(self, run: RunContext, spec: MethodSpec, ratio: float) -> list[CostFile]:
        return []  # selecting costs no training

    def training(
        self,
        run: RunContext,
        spec: MethodSpec,
        ratio: float,
        seed: int,
        data: pl.LightningDataModule,
        model: pl.LightningModule,
    ) -> CellTraining:
        return with_dynamic_on_top(static_training(run, spec.key, ratio, seed, data), spec, seed)


class ScoreBased(SelectionMethod):
    """A collector of :data:`~lightning_prune.COLLECTORS` and a selection strategy."""

    uses_scores: ClassVar[bool] = True

    def check(self, spec: MethodSpec, ratios: list[float]) -> None:
        strategy = spec.strategy or "topk"  # the runner gives every score-based spec the run's strategy
        check_select_args(strategy, spec.select_args, allowed=(VALIDATE,))
        validate = spec.select_args.get(VALIDATE, False)
        if not isinstance(validate, bool):
            raise ValueError(f"Method {spec.key!r}: select_args.validate must be true or false, got {validate!r}.")
        if validate and strategy != "auto":
            raise ValueError(
                f"Method {spec.key!r}: select_args.validate chooses among the ratio-aware candidates of "
                f"strategy 'auto' (dual, ccs, easy, random); set `strategy: auto` on the method (it has {strategy!r})."
            )

    @staticmethod
    def _validated(spec: MethodSpec) -> bool:
        return bool(spec.select_args.get(VALIDATE, False))

    def collector(self, spec: MethodSpec) -> ScoreCollector:
        # a labelled collector is named after its label, so that the same collector listed twice under
        # two labels gets two state keys (Lightning refuses two stateful callbacks with one key)
        args = {"name": spec.label, **spec.args} if spec.label else dict(spec.args)
        return make_collector(spec.name, **args)

    def costs(self, run: RunContext, spec: MethodSpec, ratio: float) -> list[CostFile]:
        scoring = run.files.scoring_cost(spec.key, (run.files.score_path(spec.key),))
        if self._validated(spec):
            selection = run.files.selection_path(spec.key, ratio)
            return [scoring, run.files.selection_cost(spec.key, ratio, (selection,))]
        return [scoring]

    def selection(self, run: RunContext, spec: MethodSpec, ratio: float) -> Selection:
        scores = Scores.load(run.files.score_path(spec.key))
        num_samples, labels = run.training_set_facts()
        scores.check_dataset(num_samples, labels)
        if self._validated(spec):
            return validated_selection(run, spec, ratio, scores, self.costs(run, spec, ratio)[1])
        strategy = spec.strategy or "topk"
        options = {key: value for key, value in spec.select_args.items() if key != VALIDATE}
        if strategy == "auto":  # the rule depends on how the coreset trains: the run's budget
            options.setdefault("budget", run.budget)
        return select(
            scores,
            ratio,
            strategy=strategy,
            seed=run.score_seed,
            weights="importance" if run.weighted else None,
            **options,
        )


class AdaPrunerMethod(SelectionMethod):
    """AdaPruner: a mask learned with the backbone, one training per ratio (``args.epochs``)."""

    def costs(self, run: RunContext, spec: MethodSpec, ratio: float) -> list[CostFile]:
        return [run.files.selection_cost(spec.key, ratio, (run.files.selection_path(spec.key, ratio),))]

    def selection(self, run: RunContext, spec: MethodSpec, ratio: float) -> Selection:
        from lightning_prune.adapruner import AdaPruner

        args = dict(spec.args)
        epochs = int(args.pop("epochs", run.score_epochs))
        pl.seed_everything(run.score_seed, verbose=False)
        model = run.make_model()
        backbone = getattr(model, "backbone", None)
        if backbone is None:
            raise ValueError(
                f"The adapruner method trains the model's network with a per-sample mask, and reads it from the "
                f"model's `backbone` attribute; {type(model).__name__} has none. Store the network that maps inputs "
                "to logits as `self.backbone` in the model (as lightning_prune.models.Classifier does), or run "
                "lightning_prune.AdaPruner from Python on your network."
            )
        num_samples, _ = run.training_set_facts()
        run.log(f"[select] {spec.key}: learning a mask keeping {1 - ratio:.2f} for {epochs} epochs")
        pruner = AdaPruner(backbone, num_samples=num_samples, keep_ratio=1.0 - ratio, **args)
        meter = CostMeter()
        trainer = run.make_trainer(epochs, [meter], progress=f"[select] {spec.key} r{ratio:.2f}")
        trainer.fit(pruner, datamodule=run.make_data())
        write_cost(self.costs(run, spec, ratio)[0], meter.record())
        return pruner.selection()


class InfluenceMethod(SelectionMethod):
    """Influence-based pruning on the scoring run's model: influence computed once, solved per ratio."""

    needs_scoring_model: ClassVar[bool] = True

    def costs(self, run: RunContext, spec: MethodSpec, ratio: float) -> list[CostFile]:
        # a missing selection at any ratio makes the run train the scoring model and compute the influence
        # again (both are per run, not per ratio), which records both costs anew
        paid_for = (run.files.selection_path(spec.key, ratio),)
        return [run.files.scoring_cost(spec.key, paid_for), run.files.selection_cost(spec.key, None, paid_for)]

    def selection(self, run: RunContext, spec: MethodSpec, ratio: float) -> Selection:
        from lightning_prune.influence import InfluencePruner

        cache = run.cache.setdefault(spec.key, {})
        if "vectors" not in cache:
            model = run.scoring_model()
            if model is None:
                raise RuntimeError("internal: the influence method needs the scoring run's model")  # score() trains it
            cache["pruner"] = InfluencePruner(**spec.args)
            run.log(f"[select] {spec.key}: last-layer influence of every training sample")
            start = time.perf_counter()
            cache["vectors"] = cache["pruner"].influence(model, run.make_data())
            # one inference pass over the training set, counted as one forward per sample
            num_samples, _ = run.training_set_facts()
            record = {"samples_forwarded": num_samples, "epochs": 0, "seconds": round(time.perf_counter() - start, 2)}
            write_cost(self.costs(run, spec, ratio)[1], record)
        run.log(f"[select] {spec.key}: solving for prune ratio {ratio:.2f}")
        return cache["pruner"].select_from(cache["vectors"], prune_ratio=ratio)


class InfoBatchMethod:
    """InfoBatch: no selection; each coreset training prunes dynamically at ``prune_ratio = ratio``
    (with the method's ``target_saving: true``, at ``target_saving = ratio``).

    Its cost is its own training (metered like every cell); the cell records the fraction of sample
    presentations it skipped as its ``fraction_skipped``.
    """

    uses_scores: ClassVar[bool] = False
    needs_scoring_model: ClassVar[bool] = False
    makes_selection: ClassVar[bool] = False
    name: ClassVar[str] = "infobatch"
    callback: ClassVar[type[InfoBatch]] = InfoBatch
    """The dynamic pruning callback each coreset training runs (a subclass of InfoBatch's machinery)."""

    SET_BY_THE_RUN: ClassVar[dict[str, str]] = {
        "prune_ratio": "the run's `prune_ratios` (or the method's own `prune_ratios:`)",
        "seed": "the run's `seeds` (each coreset training is seeded with its seed)",
    }

    def check(self, spec: MethodSpec, ratios: list[float]) -> None:
        refuse_selection_settings(spec)
        for key, source in self.SET_BY_THE_RUN.items():
            if key in spec.args:
                raise ValueError(
                    f"Method {spec.key!r} ({self.name}) sets args.{key}, which the pipeline sets from {source}; "
                    f"remove args.{key}."
                )
        if "target_saving" in spec.args:
            raise ValueError(
                f"Method {spec.key!r} ({self.name}) sets args.target_saving; the pipeline reads the ratios as target "
                "savings when the method sets `target_saving: true` (next to `name:`). Remove args.target_saving."
            )
        for ratio in ratios:
            self.callback(**self._ratio(spec, ratio), **spec.args)  # refuses a bad ratio or argument, naming it

    @staticmethod
    def _ratio(spec: MethodSpec, ratio: float) -> dict[str, Any]:
        """How the run's ratio reaches the callback: its native ``prune_ratio`` or a ``target_saving``."""
        return {"target_saving": ratio} if spec.target_saving else {"prune_ratio": ratio}

    def collector(self, spec: MethodSpec) -> None:
        return None

    def costs(self, run: RunContext, spec: MethodSpec, ratio: float) -> list[CostFile]:
        return []

    def selection(self, run: RunContext, spec: MethodSpec, ratio: float) -> Selection:
        raise RuntimeError(f"internal: {spec.key} is dynamic and makes no selection")

    def training(
        self,
        run: RunContext,
        spec: MethodSpec,
        ratio: float,
        seed: int,
        data: pl.LightningDataModule,
        model: pl.LightningModule,
    ) -> CellTraining:
        infobatch = self.callback(**self._ratio(spec, ratio), seed=seed, **spec.args)
        ratio_is = {"ratio_is": TARGET_SAVING} if spec.target_saving else {}
        return CellTraining(
            infobatch.wrap(data),
            callbacks=[infobatch],
            record=lambda: {"dynamic": True, "fraction_skipped": infobatch.fraction_skipped, **ratio_is},
        )


class SeTaMethod(InfoBatchMethod):
    """SeTa: no selection; each coreset training prunes dynamically at ``prune_ratio = ratio`` (the random
    share each epoch leaves out before its window of loss groups; the window prunes on top of it)."""

    name: ClassVar[str] = "seta"
    callback: ClassVar[type[InfoBatch]] = SeTa


SELECTING_METHODS: dict[str, Method] = {
    "adapruner": AdaPrunerMethod(),
    "influence": InfluenceMethod(),
}
"""Methods that make a selection per ratio themselves (no collector, no strategy), by name."""
DYNAMIC_METHODS: dict[str, Method] = {
    "infobatch": InfoBatchMethod(),
    "seta": SeTaMethod(),
}
"""Methods that select nothing up front: each coreset training prunes inside itself, by name."""
_SCORE_BASED = ScoreBased()


def method_for(name: str) -> Method:
    """The method registered as ``name``: a selecting or dynamic one, or a collector with a strategy."""
    for registry in (SELECTING_METHODS, DYNAMIC_METHODS):
        if name in registry:
            return registry[name]
    if name in COLLECTORS:
        return _SCORE_BASED
    raise ValueError(f"Unknown method {name!r}; choose from {known_methods()}.")


def known_methods() -> list[str]:
    return sorted(COLLECTORS) + list(SELECTING_METHODS) + list(DYNAMIC_METHODS)
