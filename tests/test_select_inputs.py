"""Bad or surprising selection inputs are named, not silently coerced."""

from __future__ import annotations

import numpy as np
import pytest

import lightning_prune as lp


def _scores(n: int = 50) -> lp.Scores:
    rng = np.random.default_rng(0)
    return lp.Scores(values=rng.random(n), method="el2n", labels=rng.integers(0, 5, n))


@pytest.mark.parametrize("seed", [-1, 0.7, "3", True])
def test_bad_seed_names_the_argument(seed):
    with pytest.raises((TypeError, ValueError), match=r"seed=.* must be a non-negative integer"):
        lp.select(_scores(), 0.5, strategy="random", seed=seed)
    with pytest.raises((TypeError, ValueError), match=r"seed=.* must be a non-negative integer"):
        lp.random_selection(50, 0.5, seed=seed)


def test_integral_numpy_seed_is_accepted():
    assert len(lp.select(_scores(), 0.5, strategy="random", seed=np.int64(3))) == 25


def test_a_ratio_that_removes_no_sample_warns():
    with pytest.warns(UserWarning, match=r"prune_ratio=0.01 removes no sample of 40"):
        selection = lp.select(_scores(40), 0.01)
    assert len(selection) == 40


def test_ccs_auto_hardness_cuts_the_hard_end_of_difficulty_scores():
    # EL2N-like scores: higher = harder. The hard cut-off must remove the highest scores.
    values = np.arange(100, dtype=np.float64)
    scores = lp.Scores(values=values, method="el2n", labels=np.zeros(100, dtype=np.int64))
    selection = lp.select(scores, prune_ratio=0.5, strategy="ccs", ccs_beta=0.2, seed=0)
    assert selection.indices.max() < 80, "the hardest 20% (highest scores) must be cut"
    assert selection.hparams["ccs_hardness"] == "high_score"


def test_ccs_auto_hardness_uses_the_accumulated_margin_when_present():
    values = np.arange(100, dtype=np.float64)
    margin = -values[::-1].copy()  # hardest (lowest margin) are the first indices
    scores = lp.Scores(
        values=values, method="aum", labels=np.zeros(100, dtype=np.int64), extras={"accumulated_margin": margin}
    )
    selection = lp.select(scores, prune_ratio=0.5, strategy="ccs", ccs_beta=0.2, seed=0)
    assert selection.indices.min() >= 0 and selection.hparams["ccs_hardness"] == "accumulated_margin"
    hardest = np.argsort(margin)[:20]
    assert not set(hardest) & set(selection.indices.tolist())
