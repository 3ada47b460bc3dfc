"""The property of issue 20's "Done when": over every registered collector and every strategy that reads
a direction, the kept set follows the meaning the collector declares. Plain numpy random data."""

from __future__ import annotations

import numpy as np
import pytest

import lightning_prune as lp
from lightning_prune.collectors.registry import COLLECTORS
from lightning_prune.pipeline.validated import candidates
from lightning_prune.selection import ScoreMeaning, meaning_of
from lightning_prune.selection.ratio_aware import AUTO_TOP_UP_TO, auto_ccs_beta
from lightning_prune.selection.strategies import STRATEGIES

N, CLASSES = 600, 4


def _cases() -> list[tuple[str, dict]]:
    """Every collector, with each value of an argument its meaning follows (Prototypicality's keep)."""
    cases = []
    for name in sorted(COLLECTORS):
        keeps = [{"keep": "hard"}, {"keep": "easy"}] if name == "prototypicality" else [{}]
        cases += [(name, hparams) for hparams in keeps]
    return cases


CASES = _cases()
IDS = [name + "".join(f"-{v}" for v in hparams.values()) for name, hparams in CASES]


def collector_scores(name: str, hparams: dict, seed: int) -> lp.Scores:
    """Random scores with the collector's declared meaning and the extras its scores carry."""
    rng = np.random.default_rng(seed)
    values = rng.random(N)
    extras = {}
    if name == "aum":  # values = -mean margin over T epochs; the accumulated margin is the sum
        extras["accumulated_margin"] = -values * 10 + rng.normal(scale=0.01, size=N)
    if name == "dual":  # uncertain, unlearned samples score high and have a low mean label probability
        extras["confidence"] = np.clip(1.0 - values + rng.normal(scale=0.05, size=N), 0.0, 1.0)
    meaning = meaning_of(COLLECTORS[name], hparams)
    return lp.Scores(values, name, hparams, labels=rng.integers(0, CLASSES, N), extras=extras, meaning=meaning)


def easy_key(scores: lp.Scores) -> np.ndarray:
    """Higher = easier, as the meaning says (the mean label probability where DUAL scores carry it)."""
    if scores.meaning == ScoreMeaning.EASINESS:
        return scores.values
    return scores.extras["confidence"] if "confidence" in scores.extras else -scores.values


def hard_key(scores: lp.Scores) -> np.ndarray:
    """Higher = harder: the lowest accumulated margin where AUM scores carry it, else the meaning's hard end."""
    if "accumulated_margin" in scores.extras:
        return -scores.extras["accumulated_margin"]
    return scores.values if scores.meaning == ScoreMeaning.DIFFICULTY else -scores.values


def assert_kept_end(key: np.ndarray, kept: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Every kept sample ranks above every dropped one by ``key`` (within each class when ``labels``)."""
    mask = np.zeros(key.size, dtype=bool)
    mask[kept] = True
    groups = [np.arange(key.size)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for members in groups:
        inside, outside = members[mask[members]], members[~mask[members]]
        if inside.size and outside.size:
            assert key[inside].min() >= key[outside].max()


def test_every_direction_reading_strategy_is_covered():
    # a new strategy must be added here and to the property below (or be listed as reading no direction)
    assert set(STRATEGIES) == {"topk", "random", "class_balanced", "ccs", "dual", "easy", "auto"}


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_topk_and_class_balanced_keep_the_higher_values_whatever_they_mean(name, hparams, seed):
    scores = collector_scores(name, hparams, seed)
    for ratio in (0.3, 0.9):
        assert_kept_end(scores.values, lp.select(scores, ratio, "topk", seed=seed).indices)
        kept = lp.select(scores, ratio, "class_balanced", seed=seed).indices
        assert_kept_end(scores.values, kept, scores.labels)


def assert_auto_cuts_the_hard_end(scores: lp.Scores, ratio: float, seed: int = 0) -> None:
    """``auto`` for a coreset trained the full steps keeps the top of preference scores, samples DUAL scores by
    confidence, and otherwise drops the hard end it names (CCS's cut-off, at least ``beta(r)``; or the cut
    before the top of each class)."""
    auto = lp.select(scores, ratio, "auto", seed=seed, budget="steps")
    choice = auto.hparams["auto_choice"]
    if scores.meaning == ScoreMeaning.PREFERENCE:
        assert choice == "top"
        assert_kept_end(scores.values, auto.indices, scores.labels)
        return
    if "confidence" in scores.extras:
        assert choice == "dual"
        return
    share = auto.hparams["ccs_beta"] if choice == "ccs" else auto.hparams["cut"]
    if choice == "ccs":
        assert share >= auto_ccs_beta(ratio)
    else:
        assert choice == "top_after_cut" and ratio <= AUTO_TOP_UP_TO
    by_hardness = np.argsort(-hard_key(scores))
    if choice == "top_after_cut" and auto.hparams["cut_by"] == "predicted_label":  # the disagreeing samples first
        by_hardness = by_hardness[
            np.argsort(scores.extras["predicted_label"][by_hardness] == scores.labels[by_hardness], kind="stable")
        ]
    cut = by_hardness[: round(share * N)]
    assert not np.isin(cut, auto.indices).any()
    if choice == "top_after_cut":  # the rest: the top of each class by the scores' own values
        rest = by_hardness[round(share * N) :]
        kept = np.isin(rest, auto.indices)
        for c in np.unique(scores.labels):
            inside, outside = rest[kept & (scores.labels[rest] == c)], rest[~kept & (scores.labels[rest] == c)]
            if inside.size and outside.size:
                assert scores.values[inside].min() >= scores.values[outside].max()


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_easy_and_auto_for_epochs_at_a_high_ratio_keep_the_easy_end_and_auto_for_steps_cuts_the_hard_one(
    name, hparams, seed
):
    scores = collector_scores(name, hparams, seed)
    assert_auto_cuts_the_hard_end(scores, 0.9, seed)
    auto = lp.select(scores, 0.9, "auto", seed=seed)  # a coreset trained for epochs
    if scores.meaning == ScoreMeaning.PREFERENCE:
        assert auto.hparams["auto_choice"] == "top"
        with pytest.raises(ValueError, match=rf"{name} scores mean 'preference'"):
            lp.select(scores, 0.9, "easy", seed=seed)
        return
    assert auto.hparams["auto_choice"] == "easy"
    assert_kept_end(easy_key(scores), auto.indices, scores.labels)
    for ratio in (0.5, 0.9):
        easy = lp.select(scores, ratio, "easy", seed=seed)
        assert_kept_end(easy_key(scores), easy.indices, scores.labels)


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=IDS)
@pytest.mark.parametrize("with_predictions", [False, True])
def test_ccs_and_auto_at_30_and_70_percent_cut_the_hard_end(name, hparams, with_predictions):
    scores = collector_scores(name, hparams, 0)
    if with_predictions:  # the training disagrees with a tenth of the labels: auto's label-noise evidence
        predicted = scores.labels.copy()
        predicted[: N // 10] = (predicted[: N // 10] + 1) % CLASSES
        extras = {**scores.extras, "predicted_label": predicted}
        scores = lp.Scores(scores.values, name, hparams, labels=scores.labels, extras=extras, meaning=scores.meaning)
    if scores.meaning == ScoreMeaning.PREFERENCE:
        with pytest.raises(ValueError, match=rf"{name} scores mean 'preference'.*no hard end"):
            lp.select(scores, 0.5, "ccs", ccs_beta=0.2)
    else:
        hardest = np.argsort(-hard_key(scores))[: round(0.2 * N)]
        kept = lp.select(scores, 0.5, "ccs", ccs_beta=0.2).indices
        assert not set(hardest.tolist()) & set(kept.tolist())
    for ratio in (0.3, 0.7):
        assert_auto_cuts_the_hard_end(scores, ratio)


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=IDS)
def test_dual_sampling_follows_difficulty_and_refuses_other_meanings(name, hparams):
    scores = collector_scores(name, hparams, 0)
    if name != "dual":
        if "confidence" not in scores.extras:
            scores = lp.Scores(
                scores.values,
                name,
                labels=scores.labels,
                # values lie in [0, 1]: the easy end as a probability
                extras={"confidence": scores.values if scores.meaning == ScoreMeaning.EASINESS else 1 - scores.values},
                meaning=scores.meaning,
            )
        if scores.meaning != ScoreMeaning.DIFFICULTY:
            with pytest.raises(ValueError, match=rf"strategy='dual'.*{name} scores mean '{scores.meaning.value}'"):
                lp.select(scores, 0.5, "dual")
            return
    confidence = scores.extras["confidence"]
    low = np.mean([confidence[lp.select(scores, 0.3, "dual", seed=s).indices].mean() for s in range(5)])
    high = np.mean([confidence[lp.select(scores, 0.9, "dual", seed=s).indices].mean() for s in range(5)])
    assert high > low  # towards the easy (confident) end as the ratio grows


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=IDS)
def test_validated_candidates_follow_the_meaning(name, hparams):
    scores = collector_scores(name, hparams, 0)
    chosen = candidates(scores, 0.9, 0, {"validate": True, "ccs_bins": 2})
    if scores.meaning == ScoreMeaning.PREFERENCE:
        assert sorted(chosen) == ["random", "top", "topk"]
        np.testing.assert_array_equal(chosen["topk"].indices, lp.select(scores, 0.9, "topk").indices)
        assert_kept_end(scores.values, chosen["top"].indices, scores.labels)
        return
    assert_kept_end(easy_key(scores), chosen["easy"].indices, scores.labels)
    assert chosen["ccs"].hparams["ccs_bins"] == 2  # the method's select_args reach the candidates that take them
    assert ("dual" in chosen) == (name == "dual")
    # the method's own ranking, of the whole data set and of each class
    np.testing.assert_array_equal(chosen["topk"].indices, lp.select(scores, 0.9, "topk").indices)
    if "class_balanced" in chosen:
        np.testing.assert_array_equal(
            chosen["class_balanced"].indices, lp.select(scores, 0.9, "class_balanced").indices
        )
