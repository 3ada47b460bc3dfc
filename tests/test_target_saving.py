"""target_saving= on every dynamic method (InfoBatch, SeTa, RS2): the per-epoch counts it plans, a fit on
a small data set that ends within 1 point of its target and says so, resume, and misuse."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
from collector_harness import EPOCHS
from ddp_infobatch_worker import TARGETED as WORKER_TARGETED
from ddp_infobatch_worker import fit_dynamic, run
from test_infobatch_contract import UserModel, digits, fit

import lightning_prune as lp
from lightning_prune.dynamic.infobatch import TARGET_MAX_WEIGHT, infobatch_plan, infobatch_target_plan
from lightning_prune.dynamic.target import TARGET_TOLERANCE, epoch_share


def losses_and_known(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    losses = np.random.default_rng(seed).gamma(2.0, 0.5, size=n)
    return losses, np.ones(n, dtype=bool)


# ---------------------------------------------------------------------------------------- InfoBatch's counts
def test_a_share_within_the_ratio_bound_is_infobatch_at_ratio_skip_over_below_mean():
    losses, known = losses_and_known()
    below = np.flatnonzero(losses < losses.mean())
    skip = len(below) // 2
    plan = infobatch_target_plan(np.arange(100), losses, known, skip, np.random.default_rng(0))
    assert plan.skipped == skip
    left_out = np.setdiff1d(np.arange(100), plan.indices)
    assert set(left_out.tolist()) <= set(below.tolist())  # only well-learned samples are left out
    kept_below = np.intersect1d(plan.indices, below)
    weights = dict(zip(plan.indices.tolist(), plan.weights.tolist(), strict=True))
    np.testing.assert_allclose([weights[i] for i in kept_below], len(below) / (len(below) - skip), rtol=1e-6)
    assert all(weights[i] == 1.0 for i in plan.indices if i not in set(below.tolist()))
    # the same count InfoBatch's own rule keeps at prune_ratio = skip / candidates
    native = infobatch_plan(np.arange(100), losses, known, skip / len(below), np.random.default_rng(0))
    assert native.skipped == plan.skipped


def test_a_share_above_the_bound_extends_the_candidates_to_the_lowest_losses_and_stays_unbiased():
    """With the weight bound at 10 (the ratio bound 0.9) the candidates reach ceil(skip / 0.9) samples."""
    losses, known = losses_and_known()
    below = int((losses < losses.mean()).sum())
    skip = below  # more than 0.9 of the samples below the mean
    count = int(np.ceil(skip / 0.9))
    lowest = np.argsort(losses, kind="stable")[:count]
    served = np.zeros(100)
    draws = 2000
    for draw in range(draws):
        plan = infobatch_target_plan(np.arange(100), losses, known, skip, np.random.default_rng(draw), 10.0)
        assert plan.skipped == skip
        assert set(np.setdiff1d(np.arange(100), plan.indices).tolist()) <= set(lowest.tolist())
        served[plan.indices] += plan.weights
    # every sample's expected weight is 1: the epoch's expected gradient is the full data's
    # (a kept candidate weighs count / (count - skip) ~ 9: 0.3 is 4.6 standard errors of 2000 draws)
    np.testing.assert_allclose(served / draws, 1.0, atol=0.3)
    np.testing.assert_allclose(served[lowest].mean() / draws, 1.0, rtol=1e-5)  # exact in every draw


def test_a_target_plan_weighs_kept_samples_at_most_max_weight_extending_the_candidates_first():
    losses, known = losses_and_known()
    below = int((losses < losses.mean()).sum())
    skip = below * 3 // 4  # above 1 - 1 / 2 of the samples below the mean
    plan = infobatch_target_plan(np.arange(100), losses, known, skip, np.random.default_rng(0))
    assert plan.skipped == skip and plan.weights.max() <= TARGET_MAX_WEIGHT == 2.0
    count = 2 * skip  # the fewest candidates whose kept ones weigh no more than 2
    lowest = np.argsort(losses, kind="stable")[:count]
    assert set(np.setdiff1d(np.arange(100), plan.indices).tolist()) <= set(lowest.tolist())
    np.testing.assert_allclose(plan.weights[np.isin(plan.indices, lowest)], count / (count - skip), rtol=1e-6)
    assert (plan.weights[~np.isin(plan.indices, lowest)] == 1.0).all()


def test_a_share_no_candidate_set_can_weigh_within_the_bound_draws_from_every_known_sample_at_max_weight():
    losses, known = losses_and_known()
    known[:10] = False  # never seen: always served, at weight 1
    skip = 60  # of 90 known: every known sample as a candidate would need weight 3
    served = np.zeros(100)
    draws = 1000
    for draw in range(draws):
        plan = infobatch_target_plan(np.arange(100), losses, known, skip, np.random.default_rng(draw))
        assert plan.skipped == skip and set(range(10)) <= set(plan.indices.tolist())
        weights = dict(zip(plan.indices.tolist(), plan.weights.tolist(), strict=True))
        assert all(weights[i] == 1.0 for i in range(10))
        assert all(weights[i] == 2.0 for i in plan.indices.tolist() if i >= 10)
        served[plan.indices] += plan.weights
    # the known samples are drawn uniformly: each is served at 2 x 30 / 90 = 2/3 in expectation, alike
    # (a sample's served weight over 1000 draws has a standard error of 0.03; 0.15 is 5 of them)
    np.testing.assert_allclose(served[10:] / draws, 2 / 3, atol=0.15)
    np.testing.assert_allclose(served[10:].mean() / draws, 2 / 3, rtol=1e-6)  # exact in every draw


def test_max_weight_one_skips_uniformly_among_the_known_samples_without_reweighting():
    losses, known = losses_and_known()
    plan = infobatch_target_plan(np.arange(100), losses, known, 30, np.random.default_rng(0), 1.0)
    assert plan.skipped == 30 and (plan.weights == 1.0).all()


def test_a_share_above_what_the_known_samples_allow_is_capped_and_unknown_samples_are_kept():
    losses, known = losses_and_known(20)
    known[:5] = False
    plan = infobatch_target_plan(np.arange(20), losses, known, 19, np.random.default_rng(0))
    assert plan.skipped == int(0.9 * 15)
    assert set(range(5)) <= set(plan.indices.tolist())


def test_epoch_shares_add_up_to_the_budget_and_make_up_a_shortfall():
    epochs = range(1, 7)
    planned: dict[int, int] = {}
    for epoch in epochs:
        planned[epoch] = epoch_share(0.5, epoch, epochs, 37, 8, planned)
    assert sum(planned.values()) == round(0.5 * 37 * 8)
    assert max(planned.values()) - min(planned.values()) <= 1
    short = {1: 0}  # epoch 1 hit a bound: the later epochs skip more
    for epoch in range(2, 7):
        short[epoch] = epoch_share(0.5, epoch, epochs, 37, 8, short)
    assert sum(short.values()) == round(0.5 * 37 * 8)


# ---------------------------------------------------------------------------------------- fits
TARGETED = {
    "infobatch": lambda target: lp.InfoBatch(target_saving=target),
    "seta": lambda target: lp.SeTa(target_saving=target, num_group=5, window_scale=0.6),
    "rs2": lambda target: lp.RS2(target_saving=target),
}


@pytest.mark.parametrize("method", sorted(TARGETED))
def test_target_saving_half_ends_within_a_point_on_a_small_data_set_and_is_reported(method, caplog):
    callback = TARGETED[method](0.5)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        fit(UserModel(), callback, datamodule=callback.wrap(digits()), epochs=8)
    assert len(callback.served) == 8
    assert abs(callback.fraction_skipped - 0.5) <= TARGET_TOLERANCE
    assert f"{type(callback).__name__}(target_saving=0.5): skipped" in caplog.text


def test_infobatch_with_a_target_reweights_and_passes_the_weight_check():
    infobatch = lp.InfoBatch(target_saving=0.4)
    weights: set[float] = set()

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            weights.update(batch[3].tolist())

    fit(UserModel(), infobatch, Record(), datamodule=infobatch.wrap(digits()), epochs=8)
    assert max(weights) > 1.0  # the kept well-learned samples are up-weighted
    assert sorted(infobatch.planned_skips) == list(range(1, 7))  # epochs 1 .. floor(0.875 * 8) - 1
    assert infobatch.hparams()["target_saving"] == 0.4 and infobatch.hparams()["prune_ratio"] is None


def test_a_target_infobatch_fit_resumes_the_same_plans(tmp_path):
    def make() -> lp.InfoBatch:
        return lp.InfoBatch(target_saving=0.4, delta=0.875, seed=2)

    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    whole.mkdir(), crashed.mkdir()
    uninterrupted = make()
    fit_dynamic(uninterrupted, str(whole))
    assert fit_dynamic(make(), str(crashed), crash_epoch=4) is None
    resumed = make()
    fit_dynamic(resumed, str(crashed), ckpt_path=str(crashed / "last.ckpt"))
    for epoch in range(EPOCHS):
        a, b = (np.load(d / f"rank0_epoch{epoch}.npz") for d in (whole, crashed))
        assert sorted(a["indices"].tolist()) == sorted(b["indices"].tolist())
        np.testing.assert_array_equal(a["weights"][np.argsort(a["indices"])], b["weights"][np.argsort(b["indices"])])
    assert resumed.planned_skips == uninterrupted.planned_skips and resumed.served == uninterrupted.served
    assert abs(uninterrupted.fraction_skipped - 0.4) <= TARGET_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(WORKER_TARGETED))
def test_two_ddp_processes_serve_the_one_process_target_plans_in_equal_shares(tmp_path, method):
    tests = os.path.dirname(os.path.abspath(__file__))
    alone, ddp = tmp_path / "alone", tmp_path / "ddp"
    alone.mkdir(), ddp.mkdir()
    single = run(str(alone), 1, method=method)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.path.dirname(tests), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, os.path.join(tests, "ddp_infobatch_worker.py"), f"--method={method}", str(ddp), "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # two processes; a shared machine can take minutes
        cwd=os.path.dirname(tests),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for epoch in range(EPOCHS):
        one = np.load(alone / f"rank0_epoch{epoch}.npz")
        shares = [np.load(ddp / f"rank{rank}_epoch{epoch}.npz") for rank in range(2)]
        assert int(shares[0]["batches"]) == int(shares[1]["batches"])  # DDP needs equal batch counts
        union = np.concatenate([share["indices"] for share in shares])
        assert set(union.tolist()) == set(one["indices"].tolist())  # the same plan, dealt out
        weight_of = dict(zip(one["indices"].tolist(), one["weights"].tolist(), strict=True))
        for share in shares:
            assert [weight_of[i] for i in share["indices"].tolist()] == pytest.approx(share["weights"].tolist())
    if method == "infobatch-target":
        assert abs(single.fraction_skipped - 0.3) <= TARGET_TOLERANCE


# ---------------------------------------------------------------------------------------- misuse
@pytest.mark.parametrize("owner", ["InfoBatch", "SeTa", "RS2"])
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prune_ratio": 0.3, "target_saving": 0.5}, ValueError, "not both"),
        ({"target_saving": 1.0}, ValueError, r"target_saving=1.0 must lie in \(0, 1\)"),
        ({"target_saving": 0}, ValueError, r"target_saving=0 must lie in \(0, 1\)"),
        ({"target_saving": True}, TypeError, "target_saving=True"),
        ({"target_saving": "half"}, TypeError, "target_saving='half'"),
    ],
)
def test_bad_targets_are_refused_by_every_method(owner, kwargs, error, match):
    with pytest.raises(error, match=f"{owner} .*{match}" if "not both" not in match else f"{owner} takes.*{match}"):
        getattr(lp, owner)(**kwargs)


def test_an_infobatch_target_the_pruned_epochs_cannot_reach_is_refused_naming_the_fix():
    with pytest.raises(ValueError, match=r"target_saving=0.5, delta=0.875\) over 4 epochs cannot be met.*raise delta"):
        lp.InfoBatch(target_saving=0.5).check_length(4)
    lp.InfoBatch(target_saving=0.5).check_length(8)  # 0.9 x 6 / 8 = 0.675 is reachable


def test_rs2_target_is_its_ratio():
    assert lp.RS2(target_saving=0.3).prune_ratio == 0.3 == lp.RS2(prune_ratio=0.3).prune_ratio
    assert lp.RS2().prune_ratio == 0.5 and lp.InfoBatch().prune_ratio == 0.5


def test_a_target_infobatch_fit_weighs_no_batch_sample_above_max_weight():
    """0.6 of 8 epochs skipped by epochs 1..6 is 80% of each: unbounded, the kept samples would weigh 10x."""
    infobatch = lp.InfoBatch(target_saving=0.6)
    weights: set[float] = set()

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            weights.update(batch[3].tolist())

    fit(UserModel(), infobatch, Record(), datamodule=infobatch.wrap(digits()), epochs=8)
    assert max(weights) == pytest.approx(2.0) and abs(infobatch.fraction_skipped - 0.6) <= TARGET_TOLERANCE
    assert infobatch.hparams()["max_weight"] == 2.0


def test_a_target_whose_plans_weigh_kept_samples_heavily_warns_once_naming_the_fix():
    """With max_weight=10, 80% of each pruned epoch skipped weighs the kept samples 10x."""
    infobatch = lp.InfoBatch(target_saving=0.6, max_weight=10)
    with pytest.warns(UserWarning, match=r"weigh 10\.0x.*Leave max_weight at its default 2") as caught:
        fit(UserModel(), infobatch, datamodule=infobatch.wrap(digits()), epochs=8)
    assert sum("weigh 10.0x" in str(w.message) for w in caught) == 1  # once per fit, not per epoch


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_weight": 2.0}, ValueError, "bounds the weights of a target_saving plan"),
        ({"prune_ratio": 0.3, "max_weight": 2.0}, ValueError, "with prune_ratio the kept samples weigh"),
        ({"target_saving": 0.5, "max_weight": 0.5}, ValueError, r"max_weight=0.5 must be a number in \[1, 10\]"),
        ({"target_saving": 0.5, "max_weight": 11}, ValueError, r"max_weight=11 must be a number in \[1, 10\]"),
        ({"target_saving": 0.5, "max_weight": True}, TypeError, "max_weight=True"),
        ({"target_saving": 0.5, "max_weight": "2"}, TypeError, "max_weight='2'"),
    ],
)
def test_bad_max_weights_are_refused_naming_the_range(kwargs, error, match):
    with pytest.raises(error, match=match):
        lp.InfoBatch(**kwargs)


def test_a_modest_target_warns_nothing_about_weights(recwarn):
    infobatch = lp.InfoBatch(target_saving=0.1)
    fit(UserModel(), infobatch, datamodule=infobatch.wrap(digits()), epochs=8)
    assert not [w for w in recwarn if "the well-learned samples it keeps weigh" in str(w.message)]
