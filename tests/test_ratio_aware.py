"""Ratio-aware selection (``dual``, ``auto``) and the study's data sets (noisy digits, synthetic tabular)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lightning_prune as lp
from lightning_prune.selection.ratio_aware import (
    auto_ccs_beta,
    dual_beta_parameters,
    sample_without_replacement,
)


def dual_scores(n: int = 2000, seed: int = 0) -> lp.Scores:
    rng = np.random.default_rng(seed)
    confidence = rng.random(n)
    values = rng.random(n) * (1 - confidence)  # uncertain and not learned = high, as DUAL scores are
    return lp.Scores(values, "dual", labels=rng.integers(0, 10, n), extras={"confidence": confidence})


def test_dual_beta_parameters_follow_the_paper():
    a, b = dual_beta_parameters(0.4, 0.5, 4.0)
    assert b == pytest.approx(15 * 0.6 * (1 - 0.5**4)) and a + b == pytest.approx(16)


@pytest.mark.parametrize("ratio", [0.3, 0.9])
def test_dual_sampling_draws_by_score_times_the_beta_density(ratio):
    scores = dual_scores()
    plan = lp.select(scores, ratio, strategy="dual").hparams
    density = torch.distributions.Beta(torch.tensor(plan["dual_beta_a"]), torch.tensor(plan["dual_beta_b"]))
    weights = density.log_prob(torch.as_tensor(np.clip(scores.extras["confidence"], 1e-6, 1 - 1e-6))).exp().numpy()
    weights = weights * scores.values
    # over many seeds, a sample is kept more often the larger its weight
    counts = np.zeros(len(scores))
    for seed in range(40):
        counts[lp.select(scores, ratio, strategy="dual", seed=seed).indices] += 1
    heavy, light = weights > np.quantile(weights, 0.8), weights < np.quantile(weights, 0.2)
    assert counts[heavy].mean() > 2 * counts[light].mean()


def test_dual_moves_towards_confident_samples_as_the_ratio_grows():
    scores = dual_scores()
    mean_confidence = {
        r: scores.extras["confidence"][lp.select(scores, r, strategy="dual").indices].mean() for r in (0.3, 0.9)
    }
    assert mean_confidence[0.9] > mean_confidence[0.3] + 0.1


def test_sampling_without_replacement_matches_successive_draws():
    weights = np.array([5.0, 3.0, 1.0, 1.0, 0.0])
    firsts = np.bincount(
        [sample_without_replacement(weights, 1, np.random.default_rng(s))[0] for s in range(4000)], minlength=5
    )
    np.testing.assert_allclose(firsts / 4000, weights / weights.sum(), atol=0.03)
    # more than the positive weights: the zero-weight samples fill the rest
    assert sorted(sample_without_replacement(weights, 5, np.random.default_rng(0)).tolist()) == [0, 1, 2, 3, 4]


def test_for_a_coreset_trained_the_full_steps_auto_uses_dual_sampling_at_every_ratio_and_ccs_without_evidence():
    for ratio in (0.3, 0.7, 0.9):
        selection = lp.select(dual_scores(), ratio, strategy="auto", budget="steps")
        assert selection.hparams["auto_choice"] == "dual" and "dual_beta_a" in selection.hparams
        assert selection.hparams["budget"] == "steps"
    rng = np.random.default_rng(1)
    el2n = lp.Scores(rng.random(1000), "el2n", labels=rng.integers(0, 10, 1000))  # no margins, no predictions
    for ratio, beta in [(0.3, 0.0), (0.5, 0.0), (0.7, 0.15), (0.9, 0.3)]:
        chosen = lp.select(el2n, ratio, strategy="auto", budget="steps")
        assert chosen.hparams["auto_choice"] == "ccs" and chosen.hparams["ccs_beta"] == pytest.approx(beta)
        assert "label_noise_evidence" not in chosen.hparams
        assert auto_ccs_beta(ratio) == pytest.approx(beta)
        expected = lp.select(el2n, ratio, strategy="ccs", ccs_beta=beta)
        np.testing.assert_array_equal(chosen.indices, expected.indices)
        if ratio < 0.8:  # below 80% the budget changes nothing
            np.testing.assert_array_equal(lp.select(el2n, ratio, strategy="auto").indices, expected.indices)
    with pytest.raises(ValueError, match=r"budget='step'.*'epochs'.*'steps'"):
        lp.select(el2n, 0.5, strategy="auto", budget="step")


@pytest.mark.parametrize("n", [1000, 1078])  # 0.8 of 1078 keeps 216, a reached ratio of 0.7996
def test_from_80_percent_auto_keeps_the_easiest_of_each_class_for_a_coreset_trained_for_epochs(n):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, n)
    el2n = lp.Scores(rng.random(n), "el2n", labels=labels)
    chosen = lp.select(el2n, 0.8, strategy="auto")  # budget="epochs", the default
    assert chosen.hparams["auto_choice"] == "easy" and chosen.hparams["easy_by"] == "low_score"
    assert chosen.hparams["budget"] == "epochs"
    for label in range(5):  # per class, every kept score is below every dropped one
        members = np.flatnonzero(labels == label)
        kept = np.intersect1d(members, chosen.indices)
        dropped = np.setdiff1d(members, chosen.indices)
        assert el2n.values[kept].max() < el2n.values[dropped].min()
    dual = dual_scores(n)
    easy = lp.select(dual, 0.9, strategy="auto")
    assert easy.hparams["easy_by"] == "confidence"
    assert dual.extras["confidence"][easy.indices].min() > np.quantile(dual.extras["confidence"], 0.8)


def aum_like(n: int, noisy: float, seed: int = 2) -> lp.Scores:
    """AUM-shaped scores: the ``noisy`` share of samples has a negative accumulated margin."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    margin = rng.uniform(0.1, 5.0, n)
    wrong = rng.choice(n, size=int(round(noisy * n)), replace=False)
    margin[wrong] = -rng.uniform(0.1, 3.0, wrong.size)
    return lp.Scores(-margin, "aum", labels=labels, extras={"accumulated_margin": margin})


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_up_to_50_percent_auto_keeps_the_top_of_each_class_once_the_likely_mislabelled_are_cut(ratio):
    scores = aum_like(1000, noisy=0.15)
    negative = np.flatnonzero(scores.extras["accumulated_margin"] < 0)
    chosen = lp.select(scores, ratio, strategy="auto")
    assert chosen.hparams["auto_choice"] == "top_after_cut"
    assert chosen.hparams["label_noise_evidence"] == pytest.approx(0.15)
    assert chosen.hparams["cut"] == pytest.approx(0.15) and chosen.hparams["cut_by"] == "accumulated_margin"
    assert not np.isin(negative, chosen.indices).any()  # every sample the margin calls mislabelled is gone
    assert chosen.indices.size == 1000 - round(ratio * 1000)
    for label in range(5):  # among the rest, each class keeps its hardest: no kept score below a dropped one
        rest = np.setdiff1d(np.flatnonzero(scores.labels == label), negative)
        kept, dropped = np.intersect1d(rest, chosen.indices), np.setdiff1d(rest, chosen.indices)
        assert dropped.size == 0 or scores.values[kept].min() >= scores.values[dropped].max()


def test_with_clean_labels_the_top_after_the_cut_is_the_methods_own_class_balanced_ranking():
    scores = aum_like(600, noisy=0.0)
    chosen = lp.select(scores, 0.5, strategy="auto", seed=3)
    assert chosen.hparams["cut"] == 0.0 and chosen.hparams["label_noise_evidence"] == 0.0
    expected = lp.select(scores, 0.5, strategy="class_balanced", seed=3)
    np.testing.assert_array_equal(chosen.indices, expected.indices)


def test_predicted_labels_are_the_evidence_where_there_is_no_margin():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 800)
    predicted = labels.copy()
    predicted[:80] = (labels[:80] + 1) % 4  # the training disagrees with 10% of the given labels
    el2n = lp.Scores(rng.random(800), "el2n", labels=labels, extras={"predicted_label": predicted})
    assert lp.selection.mislabelled.label_noise_evidence(el2n) == pytest.approx(0.1)
    low = lp.select(el2n, 0.5, strategy="auto")
    assert low.hparams["auto_choice"] == "top_after_cut" and low.hparams["cut_by"] == "predicted_label"
    assert not np.isin(np.arange(80), low.indices).any()  # the samples the training disagrees with are cut
    rest = np.arange(80, 800)
    kept = np.isin(rest, low.indices)
    for c in range(4):  # and each class keeps its highest scores among the rest
        inside, outside = rest[kept & (labels[rest] == c)], rest[~kept & (labels[rest] == c)]
        assert el2n.values[inside].min() >= el2n.values[outside].max()
    high = lp.select(el2n, 0.9, strategy="auto", budget="steps")  # above 50%: CCS, its cut-off >= the evidence
    assert high.hparams["auto_choice"] == "ccs" and high.hparams["ccs_beta"] == pytest.approx(0.3)
    noisy = lp.Scores(el2n.values, "el2n", labels=labels, extras={"predicted_label": (labels + 1) % 4})
    capped = lp.select(noisy, 0.8, strategy="auto", budget="steps")  # every label disagrees: capped at 80%
    assert capped.hparams["ccs_beta"] == pytest.approx(0.8)


def test_dual_needs_confidence_and_a_positive_cd():
    rng = np.random.default_rng(0)
    plain = lp.Scores(rng.random(100), "el2n", labels=rng.integers(0, 3, 100))
    with pytest.raises(ValueError, match=r"extras\['confidence'\]"):
        lp.select(plain, 0.5, strategy="dual")
    with pytest.raises(ValueError, match="dual_cd=0"):
        lp.select(dual_scores(100), 0.5, strategy="dual", dual_cd=0)


def test_digits_label_noise_flips_only_training_labels():
    clean, noisy = lp.DigitsDataModule(), lp.DigitsDataModule(label_noise=0.2, noise_seed=3)
    flipped = noisy.targets != noisy.clean_targets
    assert flipped.sum() == round(0.2 * len(noisy.targets))
    np.testing.assert_array_equal(noisy.clean_targets, clean.targets)
    np.testing.assert_array_equal(noisy.test_dataset.targets, clean.test_dataset.targets)
    with pytest.raises(ValueError, match="label_noise=1.0"):
        lp.DigitsDataModule(label_noise=1.0)


def test_tabular_data_is_made_the_same_every_time_and_split_three_ways():
    first, second = lp.TabularDataModule(num_samples=800), lp.TabularDataModule(num_samples=800)
    np.testing.assert_array_equal(first.targets, second.targets)
    torch.testing.assert_close(first.train_dataset[5][0], second.train_dataset[5][0])
    sizes = {name: len(idx) for name, idx in first.split_indices.items()}
    assert sizes == {"train": 480, "val": 120, "test": 200}
    x, y, i = first.train_dataset[7]
    assert x.shape == (32,) and i == 7 and 0 <= y < 8
    assert lp.MLP(32, 8)(torch.zeros(4, 32)).shape == (4, 8)


class _FakeRun:
    """What validated_selection reads of a run, without training anything."""

    score_seed = 0
    budget = "epochs"

    def __init__(self, tmp_path, accuracies):
        self.run_dir = tmp_path
        self.accuracies = accuracies
        self.lines = []

    def log(self, line):
        self.lines.append(line)


@pytest.mark.parametrize(
    ("accuracies", "chosen"),
    [
        ({"ccs": 0.9, "dual": 0.9, "easy": 0.8, "random": 0.9, "topk": 0.9, "class_balanced": 0.85}, "random"),
        ({"ccs": 0.9, "dual": 0.95, "easy": 0.9, "random": 0.9, "topk": 0.8, "class_balanced": 0.9}, "dual"),
    ],
)
def test_validated_selection_needs_a_win_over_random_on_validation(tmp_path, monkeypatch, accuracies, chosen):
    from lightning_prune.pipeline import validated
    from lightning_prune.pipeline.cost import CostFile
    from lightning_prune.pipeline.methods import MethodSpec

    def fake_accuracy(run, selection, label):
        name = label.rsplit(" ", 1)[-1]
        return run.accuracies[name], {"samples_forwarded": len(selection), "seconds": 0.1}

    monkeypatch.setattr(validated, "validation_accuracy", fake_accuracy)
    run = _FakeRun(tmp_path, accuracies)
    spec = MethodSpec(name="dual", strategy="auto", select_args={"validate": True})
    cost = CostFile(tmp_path / "costs" / "x.json", paid_for=())
    selection = validated.validated_selection(run, spec, 0.5, dual_scores(200), cost)
    assert selection.hparams["validated"] == {"chosen": chosen, "val_acc": accuracies}
    assert f"keeping {chosen}" in run.lines[-1]


def test_validated_candidates_include_the_rules_choice_where_it_differs_from_every_other():
    from lightning_prune.pipeline.validated import candidates

    noisy = candidates(aum_like(600, noisy=0.15), 0.5, 0, {"validate": True})
    assert noisy["auto"].hparams["auto_choice"] == "top_after_cut"
    rng = np.random.default_rng(5)
    plain = lp.Scores(rng.random(600), "el2n", labels=rng.integers(0, 4, 600))  # no evidence: auto is ccs
    assert "auto" not in candidates(plain, 0.5, 0, {"validate": True}) and "ccs" in noisy


# ------------------------------------------------------------------ auto: a small coreset of clean labels
def _clean_scores(method: str = "el2n", *, noisy: float = 0.0, predictions: bool = True, dual: bool = False):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 100)
    predicted = labels.copy()
    flipped = rng.choice(1000, int(noisy * 1000), replace=False)
    predicted[flipped] = (predicted[flipped] + 1) % 10
    extras: dict[str, np.ndarray] = {"predicted_label": predicted} if predictions else {}
    if dual:
        extras["confidence"] = rng.random(1000)
    return lp.Scores(rng.random(1000), method, labels=labels, extras=extras)


@pytest.mark.parametrize("dual", [False, True], ids=["el2n", "dual"])
def test_auto_under_steps_keeps_random_where_a_clean_coreset_keeps_few_samples_per_class(dual):
    scores = _clean_scores("dual" if dual else "el2n", dual=dual)
    chosen = lp.select(scores, 0.9, strategy="auto", budget="steps")  # 100 kept: 10 per class
    assert chosen.hparams["auto_choice"] == "random" and chosen.hparams["kept_per_class"] == 10.0
    assert chosen.hparams["label_noise_evidence"] == 0.0
    # the very subset of the random baseline with the same seed
    np.testing.assert_array_equal(chosen.indices, lp.select(scores, 0.9, strategy="random").indices)
    assert lp.select(scores, 0.8, strategy="auto", budget="steps").hparams["auto_choice"] == "random"  # 20 per class
    roomier = lp.select(scores, 0.7, strategy="auto", budget="steps")  # 30 per class: the method's own rule
    assert roomier.hparams["auto_choice"] == ("dual" if dual else "ccs")
    assert lp.select(scores, 0.9, strategy="auto", budget="epochs").hparams["auto_choice"] == "easy"


@pytest.mark.parametrize(
    ("kwargs", "choice"),
    [({"noisy": 0.2}, "ccs"), ({"predictions": False}, "ccs"), ({"noisy": 0.2, "dual": True}, "dual")],
    ids=["wrong labels", "no evidence", "dual, wrong labels"],
)
def test_auto_under_steps_keeps_its_rule_for_a_small_coreset_of_suspect_or_unknown_labels(kwargs, choice):
    scores = _clean_scores("dual" if kwargs.get("dual") else "el2n", **kwargs)
    assert lp.select(scores, 0.9, strategy="auto", budget="steps").hparams["auto_choice"] == choice
