"""Ratio-aware selection: which samples to keep depends on how many are kept.

At low pruning ratios the hard samples carry the information; at high ratios a coreset of hard
samples is mostly noise and outliers, and easier, representative samples with coverage of the
score range win (Sorscher et al., NeurIPS 2022; Zheng et al., ICLR 2023). Two strategies here:

``dual``
    The ratio-adaptive sampling of DUAL (Cho et al., 2025), for scores that carry each sample's
    mean label probability (``extras["confidence"]``, as :class:`~lightning_prune.DUAL` scores do).
    Samples are drawn without replacement with probability proportional to
    ``score x BetaPDF(confidence; a, b)``, where ``b = 15 (1 - m) (1 - r ** c_d)``, ``a = 16 - b``, ``r``
    the pruning ratio and ``m`` the mean confidence of the 10 highest-scored samples: as ``r`` grows the
    Beta density moves towards confident (easy) samples. ``c_d`` (``dual_cd``, default 4) sets how fast.
``auto``
    The library's recommended strategy (``select()``'s default stays ``topk``). It reads the scores'
    declared meaning (:class:`~lightning_prune.selection.meaning.ScoreMeaning`) and, where they carry
    it, their evidence of wrong labels (:func:`~lightning_prune.selection.mislabelled.label_noise_evidence`:
    the share of negative accumulated margins, else of samples the training assigns to another class):

    * for a coreset trained as many epochs as the full run (``budget="epochs"``, the default: a
      ``PrunedDataModule`` under the same ``max_epochs``), from a pruning ratio of 0.8 on: the easiest
      samples of each class (the highest mean label probability for DUAL scores, the lowest difficulty or
      the highest easiness otherwise). A coreset of 10-20% trained for epochs takes few optimiser steps,
      and easy samples are learned in few: in the study under equal epochs this candidate won on the
      validation split at 80% and 90% on every data set, and on the test split it kept 72.8% of the clean
      digits at 90% against random's 48.5%. Under ``budget="steps"`` (the full run's steps) it lost 0.4 to
      7 points to random on clean digits' validation split, so there it is not the rule;
    * for a coreset trained the full run's steps (``budget="steps"``) that keeps fewer than
      :data:`AUTO_RANDOM_PER_CLASS_BELOW` (25) samples per class, of scores whose label-noise evidence
      reads clean (below :data:`AUTO_CLEAN_BELOW`, 1%): a uniform random subset, the random baseline's
      own with the same seed (``auto_choice="random"``, ``kept_per_class`` recorded). On the clean
      digits' validation split random beat the rule's DUAL sampling and CCS at 80% and 90% pruned (21.6
      and 10.8 per class), and the two had been 0.3-1.6 points below random on test (Ayed and Hayou, 2023,
      show score-based pruning falling below random at high compression). Scores without evidence (no
      predicted labels, no margins) keep the rule below, and so do noisy labels: there the cut of
      suspect samples is worth 9-15 points over random at 90%;
    * scores with ``extras["confidence"]`` (DUAL): ``dual``;
    * other difficulty or easiness scores with label-noise evidence ``e`` (AUM, EL2N, Forgetting, TDDS), up
      to a pruning ratio of 0.5: the method's own ranking, the top of each class, after cutting off the
      samples the evidence counts (a negative margin, else a predicted label that is not the given one;
      ``cut_by``) -- ``auto_choice="top_after_cut"``; with clean labels (``e = 0``) that is
      ``class_balanced`` itself;
    * above 0.5, or without evidence: CCS with a hard cut-off of ``max(beta(r), e)``, where
      ``beta(r) = 0.75 * max(0, r - 0.5)`` (none up to 50%, 0.15 at 70%, on the way to the 0.3 the
      CCS paper uses at 90% on CIFAR-10); each cut-off is capped at the fraction removed.

    Measured on the validation splits of the three study data sets (``examples/study/``: scores of the
    study's scoring runs, coresets trained under equal steps, seed 0; points against random at 30 / 50 /
    70 / 80 / 90% pruned; docs/studies.md has the test-split tables):

    * DUAL's sampling: clean digits -0.37 / +0.37 / -0.75 / +1.49 / -1.11; digits with 20% of the labels
      flipped +8.2 / +10.4 / +7.4 / (random diverged at 80%) / +10.7; synthetic tabular +1.2 / +3.1 / +7.7;
    * the top of each class after the cut, at 30 / 50%: AUM (evidence 0 on clean digits, 0.19 on noisy
      digits, 0.16 on tabular) 0 / +0.74, +8.2 / +10.0, +3.1 / +3.0, where its plain top lost up to 21
      points on noisy digits; TDDS (its predicted labels: evidence 0, 0.15, 0.09) -0.37 / +1.11, +5.9 /
      +10.0, +0.9 / +0.6 (cutting TDDS's highest scores instead of the disagreeing samples: +1.1 / -1.9
      on noisy digits, -0.9 / -0.3 on tabular);
    * at 70% the same top lost 6.9 (AUM) and 5.1 points (TDDS) on tabular where CCS with the cut gained
      1.9 and 2.7 (clean digits: CCS -0.75 and +0.74): so the rule stops the top at 50%.

    Preference scores (Herding, Moderate) have no easy and no hard end for that rule to act on: they
    are their method's own ranking of what to keep (Herding's coreset is its first picks per class,
    Moderate's the band around the median distance), so at every ratio ``auto`` keeps the top of
    each class (``auto_choice="top"``).

    Where "of each class" is impossible -- the scores carry no labels, or the ratio leaves a class
    with no sample (1000 classes of 5 samples at 90%, a class of one sample) -- ``auto`` keeps the top
    of preference scores in the whole data set instead, warns, and records ``within="all"`` (else
    ``"class"``); for other scores it takes CCS instead of the top after the cut. What it chose is
    recorded in the selection's manifest, from the same plan the selection is drawn with.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lightning_prune.collectors.state import PREDICTED_LABEL
from lightning_prune.selection.meaning import ScoreMeaning
from lightning_prune.selection.mislabelled import label_noise_evidence, label_noise_suspects
from lightning_prune.selection.primitives import (
    ACCUMULATED_MARGIN,
    ccs_hardness_values,
    class_balanced,
    classes_left_empty,
    kept_ratio_removed,
    random_indices,
    ranked,
    resolve_ccs_hardness,
    tie_ranks,
    top,
)
from lightning_prune.selection.primitives import ccs as ccs_select
from lightning_prune.selection.scores import Scores

CONFIDENCE = "confidence"
AUTO_EASY_FROM = 0.8
"""From this pruning ratio on, ``auto`` keeps the easiest samples of each class for a coreset trained for
as many epochs as the full run (``budget="epochs"``), not for one trained the full run's steps."""
BUDGETS = ("epochs", "steps")
"""How a coreset is trained: as many epochs as the full run, or the full run's optimiser steps (the
pipeline's ``budget:`` takes the same two, see :mod:`lightning_prune.pipeline.budget`)."""
AUTO_TOP_UP_TO = 0.5
"""Up to this pruning ratio, ``auto`` keeps the method's own ranking (the top of each class) of scores
that carry label-noise evidence, once the likely mislabelled share is cut off."""
AUTO_RANDOM_PER_CLASS_BELOW = 25.0
"""Under ``budget="steps"``, a coreset keeping fewer samples than this per class (on average) of scores
that show clean labels is drawn at random by ``auto``. Set on the validation split of clean digits under
equal steps (5 training seeds): at 80% pruned (21.6 per class) random beat the rule's DUAL sampling by
0.67 points and its CCS by 1.78 (at 90%, 10.8 per class, the validated selection had chosen random over
every candidate); at 70% (32.3 per class) DUAL's sampling beat random by 1.40 and CCS was 0.15 below."""
AUTO_CLEAN_BELOW = 0.01
"""Label-noise evidence below this reads as clean labels (on the clean digits AUM's margins give 0 and a
half-length DUAL run's predictions 0.001-0.003; with 20% of the labels flipped 0.19 and 0.20)."""
DUAL_ANCHORS = 10
"""How many of the highest-scored samples set DUAL's anchor confidence ``m``."""


def check_budget(budget: Any) -> str:
    """``budget`` as ``auto`` takes it: ``"epochs"`` or ``"steps"``."""
    if budget not in BUDGETS:
        raise ValueError(
            f"budget={budget!r}: say how the coreset will be trained, 'epochs' (as many epochs as the full run, "
            "so fewer optimiser steps: a PrunedDataModule under the same max_epochs) or 'steps' (the full run's "
            "optimiser steps, e.g. with lightning_prune.pipeline.budget.StepBudget; the pipeline's budget: steps)."
        )
    return str(budget)


def auto_ccs_beta(prune_ratio: float) -> float:
    """``auto``'s CCS hard cut-off at ``prune_ratio``: none up to 50%, then rising to 0.3 at 90%."""
    return round(0.75 * max(0.0, prune_ratio - 0.5), 6)


def dual_beta_parameters(anchor_confidence: float, prune_ratio: float, cd: float) -> tuple[float, float]:
    """DUAL's Beta parameters ``(a, b)`` for a pruning ratio (see the module docs)."""
    b = 15.0 * (1.0 - anchor_confidence) * (1.0 - prune_ratio**cd)
    return 16.0 - b, b


def _confidence(scores: Scores, strategy: str = "dual") -> np.ndarray:
    if CONFIDENCE not in scores.extras:
        raise ValueError(
            f"strategy={strategy!r} samples by each sample's mean label probability (extras['confidence']), which "
            f"DUAL scores carry; these {scores.method} scores have extras {sorted(scores.extras)}. Score with "
            "lightning_prune.DUAL, or use strategy='auto' (CCS for other scores)."
        )
    confidence = np.asarray(scores.extras[CONFIDENCE], dtype=np.float64).reshape(len(scores))
    outside = (confidence < 0) | (confidence > 1)
    if outside.any():
        raise ValueError(
            f"extras['confidence'] of these {scores.method} scores must be probabilities in [0, 1] (each sample's "
            f"mean label probability); {int(outside.sum())} lie outside, e.g. {confidence[outside][:3].tolist()}. "
            "Store the mean softmax probability of the label, not a logit or a percentage."
        )
    return confidence


def _needs_difficulty(scores: Scores, strategy: str) -> None:
    if scores.meaning != ScoreMeaning.DIFFICULTY:
        raise ValueError(
            f"strategy={strategy!r} draws samples with probability proportional to a difficulty score (DUAL's "
            f"uncertainty x difficulty) times a density of their confidence, but these {scores.method} scores mean "
            f"{scores.meaning.value!r}, not 'difficulty'. Use strategy='auto', 'topk' or 'class_balanced' for them."
        )


def dual_plan(scores: Scores, prune_ratio: float, cd: float, seed: int = 0) -> dict[str, Any]:
    """What ``dual`` does at ``prune_ratio``: the Beta parameters and the anchor confidence (the mean
    confidence of the highest-scored samples, ties among them in ``seed``'s random order)."""
    _needs_difficulty(scores, "dual")
    confidence = _confidence(scores)
    anchors = ranked(scores.values, np.arange(len(scores)), seed)[:DUAL_ANCHORS]
    anchor = float(confidence[anchors].mean())
    a, b = dual_beta_parameters(anchor, prune_ratio, cd)
    return {"dual_cd": float(cd), "dual_anchor_confidence": anchor, "dual_beta_a": a, "dual_beta_b": b}


def sample_without_replacement(weights: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices drawn one after another with probability proportional to ``weights``
    (Efraimidis & Spirakis keys: the same distribution as successive draws). When fewer than
    ``count`` weights are positive, the rest are drawn uniformly from the zero-weight ones."""
    weights = np.asarray(weights, dtype=np.float64)
    uniform = rng.random(weights.size)
    with np.errstate(divide="ignore"):
        keys = np.where(weights > 0, np.log(uniform) / np.where(weights > 0, weights, 1.0), -np.inf)
    # zero weights come last, in a random order of their own
    order = np.lexsort((rng.random(weights.size), -keys))
    return order[:count]


def dual_run(scores: Scores, num_keep: int, seed: int, plan: Mapping[str, Any]) -> np.ndarray:
    """DUAL's sampling with the Beta parameters of ``plan`` (from :func:`dual_plan`)."""
    confidence = np.clip(_confidence(scores), 1e-6, 1 - 1e-6)
    beta = torch.distributions.Beta(torch.tensor(plan["dual_beta_a"]), torch.tensor(plan["dual_beta_b"]))
    density = beta.log_prob(torch.as_tensor(confidence)).exp().numpy()
    weights = density * np.clip(scores.values, 0.0, None)
    return sample_without_replacement(weights, num_keep, np.random.default_rng(seed))


def easiness(scores: Scores) -> Scores:
    """Scores ranking the easiest samples first, read from their meaning: the mean label probability
    where difficulty scores carry it (DUAL), else minus a difficulty score, or an easiness score itself.

    Preference scores (Herding, Moderate) have no easy end: refused.
    """
    if scores.meaning == ScoreMeaning.PREFERENCE:
        raise ValueError(
            f"these {scores.method} scores mean 'preference' (higher = keep, not harder or easier): they have no easy "
            "end to rank by. Keep their top instead (strategy='topk' or 'class_balanced'; strategy='auto' does so), "
            "or build the Scores with meaning='difficulty' or 'easiness' if that is what they measure."
        )
    if scores.meaning == ScoreMeaning.EASINESS:
        values = scores.values
    else:
        values = _confidence(scores, "auto") if CONFIDENCE in scores.extras else -scores.values
    return Scores(
        values=values,
        method=f"{scores.method}-easy",
        hparams=scores.hparams,
        labels=scores.labels,
        meaning=ScoreMeaning.EASINESS,
    )


def easy_by(scores: Scores) -> str:
    """Where :func:`easiness` reads the easy end of ``scores`` (recorded as ``easy_by``)."""
    if scores.meaning == ScoreMeaning.EASINESS:
        return "high_score"
    return CONFIDENCE if CONFIDENCE in scores.extras else "low_score"


def _first_outside_selection() -> int:
    """The ``stacklevel`` of the first caller outside this package, for the caller of this function's caller
    (a warning points at the user's ``select()`` call, however deep the plan that warns)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(__package__ or __name__):
        frame, level = frame.f_back, level + 1
    return level


def within_classes(scores: Scores, num_keep: int, seed: int, keeps: str, strategy: str) -> str:
    """``"class"`` where every class can keep its share of ``num_keep``, else ``"all"`` with a warning
    that names why and what ``strategy`` ``keeps`` instead."""
    reason = (
        f"these {scores.method} scores carry no labels"
        if scores.labels is None
        else classes_left_empty(scores.labels, num_keep, seed)
    )
    if reason is None:
        return "class"
    warnings.warn(
        f"strategy={strategy!r} keeps the {keeps} samples of each class here, but {reason}; it keeps the {keeps} "
        "samples of the whole data set instead (recorded as within='all'). Give the Scores labels=... or lower "
        "prune_ratio to keep every class, or choose strategy='topk' to rank the whole data set on purpose.",
        UserWarning,
        stacklevel=_first_outside_selection(),
    )
    return "all"


def easy_plan(scores: Scores, num_keep: int, seed: int, strategy: str = "easy") -> dict[str, Any]:
    """The easiest samples of each class (or of the whole data set where a class would keep none)."""
    easiness(scores)  # refuses preference scores before anything is drawn
    return {"easy_by": easy_by(scores), "within": within_classes(scores, num_keep, seed, "easiest", strategy)}


def easy_run(scores: Scores, num_keep: int, seed: int, plan: Mapping[str, Any]) -> np.ndarray:
    """The easiest samples as :func:`easy_plan` planned them."""
    return keep_top(easiness(scores), num_keep, seed, plan["within"])


def keep_top(scores: Scores, num_keep: int, seed: int, within: str) -> np.ndarray:
    """The top of ``scores`` within each class (``within="class"``) or in the whole data set (``"all"``)."""
    if within == "class" and scores.labels is not None:  # within_classes() chose "class" because labels exist
        return class_balanced(scores.values, scores.labels, num_keep, seed)
    return top(scores.values, num_keep, seed)


def auto_plan(
    scores: Scores,
    prune_ratio: float,
    num_keep: int,
    cd: float = 4.0,
    *,
    seed: int = 0,
    ccs_bins: int = 50,
    ccs_hardness: str = "auto",
    budget: str = "epochs",
) -> dict[str, Any]:
    """What ``auto`` chooses for these scores at ``prune_ratio``, keeping ``num_keep`` (recorded in the
    selection's manifest and executed by :func:`auto_run`): the choice follows the ratio asked for,
    DUAL's parameters and the cut-offs the ratio reached. ``budget``: how the coreset will be trained
    (:data:`BUDGETS`)."""
    return {"budget": budget, **_auto_choice(scores, prune_ratio, num_keep, cd, seed, ccs_bins, ccs_hardness, budget)}


def _auto_choice(
    scores: Scores,
    prune_ratio: float,
    num_keep: int,
    cd: float,
    seed: int,
    ccs_bins: int,
    ccs_hardness: str,
    budget: str,
) -> dict[str, Any]:
    if scores.meaning == ScoreMeaning.PREFERENCE:
        return {"auto_choice": "top", "within": within_classes(scores, num_keep, seed, "top", "auto")}
    if budget == "epochs" and prune_ratio >= AUTO_EASY_FROM:
        return {"auto_choice": "easy", **easy_plan(scores, num_keep, seed, "auto")}
    evidence = label_noise_evidence(scores)
    noise = {} if evidence is None else {"label_noise_evidence": round(evidence, 6)}
    if budget == "steps" and evidence is not None and evidence < AUTO_CLEAN_BELOW:
        per_class = _kept_per_class(scores, num_keep)  # only here: it counts the classes
        if per_class is not None and per_class < AUTO_RANDOM_PER_CLASS_BELOW:
            return {"auto_choice": "random", **noise, "kept_per_class": per_class}
    removed = kept_ratio_removed(len(scores), num_keep)
    if CONFIDENCE in scores.extras and scores.meaning == ScoreMeaning.DIFFICULTY:
        return {"auto_choice": "dual", **noise, **dual_plan(scores, removed, cd, seed)}
    if evidence is not None and prune_ratio <= AUTO_TOP_UP_TO and scores.labels is not None:
        cut = _cut_fraction(evidence, len(scores), num_keep)
        if classes_left_empty(_after_cut(scores, cut, seed)[1], num_keep, seed) is None:
            return {"auto_choice": "top_after_cut", **noise, "cut": cut, "cut_by": _suspected_by(scores)}
    beta = _cut_fraction(max(auto_ccs_beta(prune_ratio), evidence or 0.0), len(scores), num_keep)
    return {
        "auto_choice": "ccs",
        **noise,
        "ccs_beta": beta,
        "ccs_bins": int(ccs_bins),
        "ccs_hardness": resolve_ccs_hardness(scores, ccs_hardness, beta),
    }


def _kept_per_class(scores: Scores, num_keep: int) -> float | None:
    """How many samples the coreset keeps per class on average (``None`` without labels)."""
    if scores.labels is None:
        return None
    return round(num_keep / np.unique(np.asarray(scores.labels)).size, 6)


def _cut_fraction(fraction: float, num_samples: int, num_keep: int) -> float:
    """``fraction`` of the data set to cut off, capped so that ``num_keep`` samples remain."""
    return round(min(float(fraction), kept_ratio_removed(num_samples, num_keep)), 6)


def _suspected_by(scores: Scores) -> str:
    """What :func:`~lightning_prune.selection.mislabelled.label_noise_evidence` read: the accumulated margin
    or the predicted labels."""
    return ACCUMULATED_MARGIN if ACCUMULATED_MARGIN in scores.extras else PREDICTED_LABEL


def _after_cut(scores: Scores, cut: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The indices left once ``cut`` of the data set is removed, the samples
    :func:`~lightning_prune.selection.mislabelled.label_noise_suspects` suspects first (the hardest first,
    by the end CCS cuts: the lowest margin, else the hard end the meaning names), and their labels."""
    suspect = label_noise_suspects(scores)
    if suspect is None or scores.labels is None:  # auto_plan plans a cut only for labelled scores with evidence
        raise ValueError(f"these {scores.method} scores carry no label-noise evidence to cut by.")
    hardness = ccs_hardness_values(scores, resolve_ccs_hardness(scores, "auto", cut))
    order = np.lexsort((tie_ranks(len(scores), seed), -hardness, ~suspect))  # suspects first, hardest first
    pool = np.sort(order[int(round(cut * len(scores))) :])
    return pool, np.asarray(scores.labels)[pool]


def top_after_cut_run(scores: Scores, num_keep: int, seed: int, plan: Mapping[str, Any]) -> np.ndarray:
    """The top of each class of what is left once ``plan["cut"]`` of the data set, the likely mislabelled
    samples, is removed."""
    pool, labels = _after_cut(scores, plan["cut"], seed)
    return pool[class_balanced(scores.values[pool], labels, num_keep, seed)]


def auto_run(scores: Scores, num_keep: int, seed: int, plan: Mapping[str, Any]) -> np.ndarray:
    """``auto`` as :func:`auto_plan` planned it."""
    choice = plan["auto_choice"]
    if choice == "top":
        return keep_top(scores, num_keep, seed, plan["within"])
    if choice == "top_after_cut":
        return top_after_cut_run(scores, num_keep, seed, plan)
    if choice == "easy":
        return easy_run(scores, num_keep, seed, plan)
    if choice == "random":
        return random_indices(len(scores), num_keep, seed)
    if choice == "dual":
        return dual_run(scores, num_keep, seed, plan)
    return ccs_select(
        scores, num_keep, seed, beta=plan["ccs_beta"], bins=plan["ccs_bins"], hardness=plan["ccs_hardness"]
    )
