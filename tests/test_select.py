"""select(): every strategy's size, rule and determinism, importance weights, and bad inputs."""

import numpy as np
import pytest

from lightning_prune.selection import STRATEGIES, Scores, Selection, label_fingerprint, random_selection, select
from lightning_prune.selection.strategies import ccs_bin_budgets, class_quotas, num_to_keep


def make_scores(n: int = 200, classes: int = 4, seed: int = 0, **extras) -> Scores:
    rng = np.random.default_rng(seed)
    return Scores(
        values=rng.normal(size=n), method="toy", hparams={"epochs": 3}, labels=np.arange(n) % classes, extras=extras
    )


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.73, 0.9])
def test_every_strategy_keeps_n_minus_round_rn_sorted_unique(strategy, ratio):
    # the mean label probability DUAL scores carry, which "dual" samples by
    scores = make_scores(confidence=np.linspace(0.01, 0.99, 200))
    selection = select(scores, ratio, strategy=strategy, seed=3)
    assert len(selection) == 200 - round(ratio * 200)
    assert np.all(np.diff(selection.indices) > 0)
    assert selection.indices.min() >= 0 and selection.indices.max() < 200
    assert selection.num_samples == 200 and selection.method == "toy"
    assert selection.label_fingerprint == label_fingerprint(scores.labels)
    assert selection.hparams["strategy"] == strategy
    assert selection.hparams["prune_ratio"] == ratio and selection.hparams["seed"] == 3
    assert selection.hparams["scores_hparams"] == {"epochs": 3}
    assert selection.weights is None
    again = select(scores, ratio, strategy=strategy, seed=3)
    np.testing.assert_array_equal(again.indices, selection.indices)


def test_topk_keeps_highest_and_breaks_ties_in_a_seeded_random_order():
    values = np.array([0.5, 0.9, 0.1, 0.9, 0.3, 0.5, 0.7, 0.2, 0.5, 0.0])
    # keep 4: the two 0.9s, the 0.7, then one of the three tied 0.5s (indices 0, 5, 8), drawn from the seed
    tied = set()
    for seed in range(12):
        kept = select(Scores(values, "toy"), prune_ratio=0.6, strategy="topk", seed=seed).indices.tolist()
        assert {1, 3, 6} <= set(kept) and len(kept) == 4
        tied |= set(kept) - {1, 3, 6}
    assert tied == {0, 5, 8}


def test_random_is_seeded_uniform_and_matches_random_selection():
    scores = make_scores(n=1000)
    a = select(scores, 0.5, strategy="random", seed=1)
    b = select(scores, 0.5, strategy="random", seed=2)
    assert not np.array_equal(a.indices, b.indices)
    standalone = random_selection(1000, 0.5, seed=1, labels=scores.labels)
    np.testing.assert_array_equal(standalone.indices, a.indices)
    assert standalone.method == "random" and standalone.label_fingerprint == scores.label_fingerprint
    assert random_selection(1000, 0.5, seed=1).label_fingerprint is None
    # Uniform: not biased towards high scores (topk would keep only the upper half).
    kept_values = scores.values[a.indices]
    assert abs(np.median(kept_values) - np.median(scores.values)) < 0.2


def test_class_balanced_keeps_proportions_and_top_scores_per_class():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 3)
    values = np.arange(15, dtype=float)[::-1].copy()  # lower index = higher score
    selection = select(Scores(values, "toy", labels=labels), prune_ratio=0.6, strategy="class_balanced")
    # keep 6 of 15: exact shares 2.8 / 2.0 / 1.2 -> floors 2 / 2 / 1, the missing one goes to class 0.
    assert selection.indices.tolist() == [0, 1, 2, 7, 8, 12]
    assert class_quotas(labels, 6) == {0: 3, 1: 2, 2: 1}
    big = make_scores(n=400, classes=4)
    kept = select(big, 0.75, strategy="class_balanced").indices
    assert np.bincount(big.labels[kept]).tolist() == [25, 25, 25, 25]


def test_class_balanced_errors_name_the_problem():
    labels = np.array([0] * 99 + [1])
    with pytest.raises(ValueError, match=r"no sample of class\(es\) \[1\].*Lower prune_ratio"):
        select(Scores(np.ones(100), "toy", labels=labels), 0.9, strategy="class_balanced")
    with pytest.raises(ValueError, match="needs the training labels"):
        select(Scores(np.ones(100), "toy"), 0.5, strategy="class_balanced")


def test_ccs_budgets_follow_the_smallest_bin_first_rule():
    # 8 kept over bins of sizes 1, 2, 5, 10: 1 = min(1, 8//4), 2 = min(2, 7//3), 2 = min(5, 5//2), 3 = min(10, 3//1).
    assert ccs_bin_budgets(np.array([5, 1, 10, 2]), 8).tolist() == [2, 1, 3, 2]
    # Empty bins are visited first and take nothing.
    assert ccs_bin_budgets(np.array([0, 4, 0, 4]), 6).tolist() == [0, 3, 0, 3]


def test_ccs_removes_hardest_then_samples_bins_by_hand_computed_budgets():
    hard = [-5.0, -4.0]  # the two lowest scores: the hardest 10% under ccs_hardness="low_score"
    values = np.array(hard + [0.0] + [0.3] * 2 + [0.55] * 5 + [1.0] * 10)
    scores = Scores(values, "toy", meaning="easiness")  # low = hard
    counts = []
    for seed in (0, 1, 2):
        sel = select(scores, 0.6, strategy="ccs", seed=seed, ccs_beta=0.1, ccs_bins=4, ccs_hardness="low_score")
        kept = values[sel.indices]
        # Pool range [0, 1] in 4 bins of width 0.25: sizes 1, 2, 5, 10 -> budgets 1, 2, 2, 3.
        counts.append([int((kept == v).sum()) for v in (-5.0, -4.0, 0.0, 0.3, 0.55, 1.0)])
        assert sel.hparams["ccs_beta"] == 0.1 and sel.hparams["ccs_bins"] == 4
        assert sel.hparams["ccs_hardness"] == "low_score"
    assert counts == [[0, 0, 1, 2, 2, 3]] * 3
    picks = {tuple(select(scores, 0.6, "ccs", seed=s, ccs_beta=0.1, ccs_bins=4).indices) for s in range(5)}
    assert len(picks) > 1  # sampling inside bins depends on the seed


def test_ccs_hardness_sources():
    n = 100
    values = np.linspace(0, 1, n)
    margin = np.ones(n)
    margin[[10, 50, 90]] = -3.0  # the hardest by accumulated margin, scattered across the score range
    with_margin = Scores(values, "aum", extras={"accumulated_margin": margin})
    sel = select(with_margin, 0.5, "ccs", ccs_beta=0.03)  # auto -> accumulated margin
    assert sel.hparams["ccs_hardness"] == "accumulated_margin"
    assert not set(sel.indices.tolist()) & {10, 50, 90}
    high = select(Scores(values, "toy"), 0.5, "ccs", ccs_beta=0.1, ccs_hardness="high_score")
    assert high.indices.max() < 90  # the 10 highest scores were cut
    low = select(Scores(values, "toy", meaning="easiness"), 0.5, "ccs", ccs_beta=0.1, ccs_hardness="low_score")
    assert low.hparams["ccs_hardness"] == "low_score" and low.indices.min() >= 10
    auto = select(Scores(values, "toy"), 0.5, "ccs", ccs_beta=0.1)  # auto without margin -> the hard (high) end
    assert auto.hparams["ccs_hardness"] == "high_score" and auto.indices.max() < 90
    with pytest.raises(ValueError, match="extras\\['accumulated_margin'\\]"):
        select(Scores(values, "toy"), 0.5, "ccs", ccs_hardness="accumulated_margin")
    with pytest.raises(ValueError, match="ccs_hardness='hardest' is not one of"):
        select(Scores(values, "toy"), 0.5, "ccs", ccs_hardness="hardest")


def test_ccs_beta_larger_than_prune_ratio_is_refused():
    with pytest.raises(ValueError, match=r"use ccs_beta <= prune_ratio \(0.3\)"):
        select(make_scores(n=100), 0.3, "ccs", ccs_beta=0.5)


def test_importance_weights_are_min_max_normalised_over_all_samples():
    values = np.array([2.0, -1.0, 5.0, 3.0, 0.0])
    sel = select(Scores(values, "tdds"), 0.4, strategy="topk", weights="importance")
    assert sel.indices.tolist() == [0, 2, 3]
    np.testing.assert_allclose(sel.weights, [(2 + 1) / 6, 1.0, (3 + 1) / 6], rtol=1e-6)
    assert sel.hparams["weights"] == "importance"
    flat = select(Scores(np.full(5, 0.7), "tdds"), 0.4, weights="importance")
    np.testing.assert_array_equal(flat.weights, np.ones(3, dtype=np.float32))


def test_selection_from_select_round_trips_through_a_file(tmp_path):
    sel = select(make_scores(), 0.5, "ccs", seed=4, weights="importance", ccs_beta=0.1)
    loaded = Selection.load(sel.save(tmp_path / "sel.npz"))
    np.testing.assert_array_equal(loaded.indices, sel.indices)
    np.testing.assert_array_equal(loaded.weights, sel.weights)
    assert loaded.hparams == sel.hparams and loaded.label_fingerprint == sel.label_fingerprint


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_ratio_outside_open_unit_interval_is_refused(ratio):
    with pytest.raises(ValueError, match=r"outside \(0, 1\).*fraction of the training set to REMOVE"):
        select(make_scores(), ratio)
    with pytest.raises(ValueError, match=r"outside \(0, 1\)"):
        random_selection(100, ratio)


def test_other_bad_inputs_are_refused_clearly():
    scores = make_scores()
    with pytest.raises(ValueError, match=r"Unknown selection strategy 'best'; choose one of \['auto', 'ccs'"):
        select(scores, 0.5, strategy="best")
    with pytest.raises(ValueError, match="weights='uniform' is not supported"):
        select(scores, 0.5, weights="uniform")
    with pytest.raises(TypeError, match="takes a lightning_prune.Scores"):
        select(np.ones(10), 0.5)
    with pytest.raises(ValueError, match="removes all 3 samples"):
        num_to_keep(3, 0.9)
    with pytest.raises(ValueError, match="labels have shape"):
        random_selection(10, 0.5, labels=np.zeros(9))
