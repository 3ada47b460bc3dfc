"""``validate: true``: choose a method's selection at each ratio on the validation split.

No single rule of which samples to keep wins on every data set and ratio (see the README's study):
a data set with noisy labels rewards dropping the hard tail at every ratio, a clean one is served
best by random subsets at moderate ratios and by easy ones at extreme ratios. So at each ratio the
pipeline builds a few candidate selections from the method's scores -- the method's own ranking (the
top-k of its scores, of the whole data set and of each class), DUAL's ratio-adaptive sampling (for DUAL
scores), CCS with the ratio-dependent cut-off, ``auto``'s own choice (for other difficulty scores: the
top of each class once the likely mislabelled share is cut off), the easiest samples of each class (what
Sorscher et al. find best when little data is kept), and a uniform random subset -- trains one model on
each (the run's coreset training under its ``budget``, seeded with ``score_seed``), and keeps the
candidate with the best final ``val_acc`` (on a tie, random: a score-based candidate must do better on validation to be
chosen). The test split is never read. Every candidate's validation accuracy and the
choice are recorded in the selection's manifest, and the candidate trainings are charged to the
method's cost (``RUN/costs/select-KEY-rR.json``). When random wins, the method *is* random pruning at
that ratio: its coreset trainings use the random baseline's subset of each seed.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np

from lightning_prune.data.pruned import PrunedDataModule
from lightning_prune.pipeline.context import MethodSpec, RunContext
from lightning_prune.pipeline.cost import CostFile, CostMeter, add_costs, write_cost
from lightning_prune.selection.meaning import ScoreMeaning
from lightning_prune.selection.primitives import classes_left_empty
from lightning_prune.selection.ratio_aware import CONFIDENCE, auto_ccs_beta
from lightning_prune.selection.scores import Scores
from lightning_prune.selection.selection import Selection
from lightning_prune.selection.strategies import (
    STRATEGIES,
    as_strategy,
    check_select_args,
    num_to_keep,
    random_selection,
    select,
)

VALIDATE = "validate"
"""The ``select_args`` key that turns validation-based choice on."""


def candidates(
    scores: Scores, ratio: float, seed: int, select_args: dict[str, Any], budget: str = "epochs"
) -> dict[str, Selection]:
    """The candidate selections at ``ratio``, by name, each given the method's ``select_args`` it takes.

    The method's strategy is ``auto`` (``validate`` chooses among its candidates), so ``select_args`` are
    checked against ``auto``'s options (``budget``: how the candidates' coresets train, the run's); each
    candidate strategy gets the ones it takes (``ccs`` its
    ``ccs_bins`` and ``ccs_hardness``, ``dual`` its ``dual_cd``). Every method's scores get ``random`` and
    their own ranking, ``topk`` (the highest scores of the whole data set). The others read the scores'
    meaning: difficulty and easiness scores get ``class_balanced`` (the highest of each class, where every
    class keeps a sample), ``ccs``, ``easy``, and ``dual`` for DUAL scores or else ``auto`` (the rule's
    choice: the top of each class after the label-noise cut, or CCS with that cut-off) where it differs
    from every other candidate; preference scores, which have no easy or hard end, get ``top``
    (``auto``'s choice for them: the top of each class).
    """
    options = {"budget": budget, **{key: value for key, value in select_args.items() if key != VALIDATE}}
    check_select_args("auto", options)

    def taken(strategy: str) -> dict[str, Any]:
        names = as_strategy(STRATEGIES[strategy]).option_names
        return {key: value for key, value in options.items() if key in names}

    chosen = {
        "random": random_selection(len(scores), ratio, seed=seed, labels=scores.labels),
        # the method's own ranking, of the whole data set (and of each class, below)
        "topk": select(scores, ratio, strategy="topk", seed=seed),
    }
    if scores.meaning == ScoreMeaning.PREFERENCE:
        chosen["top"] = select(scores, ratio, strategy="auto", seed=seed, **taken("auto"))  # the top of each class
        return chosen
    if scores.labels is not None and classes_left_empty(scores.labels, num_to_keep(len(scores), ratio), seed) is None:
        chosen["class_balanced"] = select(scores, ratio, strategy="class_balanced", seed=seed)
    chosen["ccs"] = select(scores, ratio, strategy="ccs", seed=seed, ccs_beta=auto_ccs_beta(ratio), **taken("ccs"))
    chosen["easy"] = select(scores, ratio, strategy="easy", seed=seed, **taken("easy"))
    if CONFIDENCE in scores.extras and scores.meaning == ScoreMeaning.DIFFICULTY:
        chosen["dual"] = select(scores, ratio, strategy="dual", seed=seed, **taken("dual"))
        return chosen  # auto's choice for DUAL scores is "dual"
    rule = select(scores, ratio, strategy="auto", seed=seed, **taken("auto"))
    if not any(np.array_equal(rule.indices, other.indices) for other in chosen.values()):
        chosen["auto"] = rule  # the rule's choice (the top after the label-noise cut, or CCS with it)
    return chosen


def validation_accuracy(run: RunContext, selection: Selection, label: str) -> tuple[float, dict[str, Any]]:
    """The final ``val_acc`` of the run's coreset training on ``selection``, and what that training cost."""
    pl.seed_everything(run.score_seed, verbose=False)
    model, data = run.make_model(), run.make_data()
    meter = CostMeter()
    trainer = run.make_trainer(run.train_epochs, [*run.coreset_budget(), meter], progress=label)
    trainer.fit(model, datamodule=PrunedDataModule(data, selection, seed=run.score_seed))
    value = trainer.callback_metrics.get("val_acc")
    if value is None:
        raise ValueError(
            "select_args.validate needs a validation accuracy: the data module must have a validation split "
            "(val_dataloader) and the model must log 'val_acc', as DigitsDataModule and Classifier do."
        )
    return float(value), meter.record()


def validated_selection(run: RunContext, spec: MethodSpec, ratio: float, scores: Scores, cost: CostFile) -> Selection:
    """The candidate with the best validation accuracy (ties: random, else the first in name order)."""
    options = candidates(scores, ratio, run.score_seed, spec.select_args, run.budget)
    accuracies, costs = {}, []
    for name in sorted(options):
        accuracies[name], spent = validation_accuracy(run, options[name], f"[select] {spec.key} r{ratio:.2f} {name}")
        costs.append(spent)
    # a score-based candidate must beat random on validation to be chosen: a tie is no evidence for it
    best = max(sorted(accuracies), key=lambda name: (accuracies[name], name == "random"))
    run.log(
        f"[select] {spec.key} at prune ratio {ratio:.2f}: validation accuracy "
        + ", ".join(f"{name} {100 * acc:.2f}" for name, acc in sorted(accuracies.items()))
        + f"; keeping {best}"
    )
    write_cost(cost, add_costs(costs))
    selection = options[best]
    selection.hparams["validated"] = {"chosen": best, "val_acc": accuracies}
    return selection
