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
    The library's recommended default. From a pruning ratio of 0.8 on it keeps the easiest samples
    of each class (the highest mean label probability for DUAL scores, the lowest difficulty score
    otherwise): with so little data kept, hard samples are noise and outliers (Sorscher et al.), and
    in the README's three-data-set study this candidate won on the validation split at 80% and 90%
    on every data set. Below 0.8: for scores with ``extras["confidence"]`` it is ``dual``; for every
    other difficulty score it is CCS with a hard cut-off that grows with the ratio,
    ``beta(r) = 0.75 * max(0, r - 0.5)`` (none up to 50%, 0.15 at 70%: on the way to the 0.3 the CCS
    paper uses at 90% on CIFAR-10). What it chose is recorded in the selection's manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightning_prune.selection.scores import Scores

CONFIDENCE = "confidence"
AUTO_EASY_FROM = 0.8
"""From this pruning ratio on, ``auto`` keeps the easiest samples of each class."""
DUAL_ANCHORS = 10
"""How many of the highest-scored samples set DUAL's anchor confidence ``m``."""


def auto_ccs_beta(prune_ratio: float) -> float:
    """``auto``'s CCS hard cut-off at ``prune_ratio``: none up to 50%, then rising to 0.3 at 90%."""
    return round(0.75 * max(0.0, prune_ratio - 0.5), 6)


def dual_beta_parameters(anchor_confidence: float, prune_ratio: float, cd: float) -> tuple[float, float]:
    """DUAL's Beta parameters ``(a, b)`` for a pruning ratio (see the module docs)."""
    b = 15.0 * (1.0 - anchor_confidence) * (1.0 - prune_ratio**cd)
    return 16.0 - b, b


def _confidence(scores: Scores) -> np.ndarray:
    if CONFIDENCE not in scores.extras:
        raise ValueError(
            f"strategy='dual' samples by each sample's mean label probability (extras['confidence']), which "
            f"DUAL scores carry; these {scores.method} scores have extras {sorted(scores.extras)}. Score with "
            "lightning_prune.DUAL, or use strategy='auto' (CCS for other scores)."
        )
    return np.asarray(scores.extras[CONFIDENCE], dtype=np.float64).reshape(len(scores))


def dual_plan(scores: Scores, prune_ratio: float, cd: float) -> dict[str, Any]:
    """What ``dual`` does at ``prune_ratio``: the Beta parameters and the anchor confidence."""
    if cd <= 0:
        raise ValueError(f"dual_cd={cd} must be positive (DUAL's c_d; the paper uses 4).")
    confidence = _confidence(scores)
    anchors = np.lexsort((np.arange(len(scores)), -scores.values))[:DUAL_ANCHORS]
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


def _dual(scores: Scores, num_keep: int, seed: int, *, cd: float = 4.0) -> np.ndarray:
    prune_ratio = kept_ratio_removed(len(scores), num_keep)
    plan = dual_plan(scores, prune_ratio, cd)
    confidence = np.clip(_confidence(scores), 1e-6, 1 - 1e-6)
    beta = torch.distributions.Beta(torch.tensor(plan["dual_beta_a"]), torch.tensor(plan["dual_beta_b"]))
    density = beta.log_prob(torch.as_tensor(confidence)).exp().numpy()
    weights = density * np.clip(scores.values, 0.0, None)
    return sample_without_replacement(weights, num_keep, np.random.default_rng(seed))


def easiness(scores: Scores) -> Scores:
    """Scores ranking the easiest samples first: the mean label probability where the scores carry it
    (DUAL), else minus the difficulty score (every difficulty score of the library is harder = higher)."""
    values = scores.extras[CONFIDENCE] if CONFIDENCE in scores.extras else -scores.values
    return Scores(values=values, method=f"{scores.method}-easy", hparams=scores.hparams, labels=scores.labels)


def kept_ratio_removed(num_samples: int, num_keep: int) -> float:
    """The fraction a selection of ``num_keep`` of ``num_samples`` actually removes (DUAL's ``r``)."""
    return 1.0 - num_keep / num_samples


def auto_plan(scores: Scores, prune_ratio: float, num_keep: int, cd: float = 4.0) -> dict[str, Any]:
    """What ``auto`` chooses for these scores at ``prune_ratio``, keeping ``num_keep`` (recorded in the
    selection's manifest): the choice follows the ratio asked for, DUAL's parameters the ratio reached."""
    if prune_ratio >= AUTO_EASY_FROM:
        return {"auto_choice": "easy", "easy_by": CONFIDENCE if CONFIDENCE in scores.extras else "low_score"}
    if CONFIDENCE in scores.extras:
        return {"auto_choice": "dual", **dual_plan(scores, kept_ratio_removed(len(scores), num_keep), cd)}
    return {"auto_choice": "ccs", "ccs_beta": auto_ccs_beta(prune_ratio), "ccs_hardness": "auto"}


def _auto(scores: Scores, num_keep: int, seed: int, *, cd: float = 4.0, ratio: float | None = None) -> np.ndarray:
    """``auto`` at the ratio asked for (``ratio``, which ``select()`` passes; else the ratio reached)."""
    from lightning_prune.selection.strategies import _ccs, _class_balanced

    prune_ratio = kept_ratio_removed(len(scores), num_keep) if ratio is None else ratio
    plan = auto_plan(scores, prune_ratio, num_keep, cd)
    if plan["auto_choice"] == "easy":
        return _class_balanced(easiness(scores), num_keep, seed)
    if plan["auto_choice"] == "dual":
        return _dual(scores, num_keep, seed, cd=cd)
    return _ccs(scores, num_keep, seed, beta=plan["ccs_beta"], hardness="auto")
