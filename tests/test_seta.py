"""SeTa against the official code (mrazhou/SeTa): its k-means groups and sliding windows equal the official
functions' on the same loss tables (numbers computed by running the official ``seta.py``), a windowed
epoch's random plan has the official plan's distribution, and several epochs of plans equal the official
rule written out in the official code's own structure; then target_saving, fits, the pipeline and misuse.

The DDP (1 vs 2 processes), resume and no-host-sync runs are test_infobatch.py's, parametrised over
InfoBatch and SeTa (``seta_reference_run`` below is SeTa's reference there).
"""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from collector_harness import EPOCHS, NUM_SAMPLES, make_labels
from ddp_infobatch_worker import SETA_SETTINGS, WeightedKnownLogits, fit_dynamic
from sklearn.cluster import KMeans
from test_cli import TINY, run_cli
from test_infobatch_contract import UserModel, digits, fit

import lightning_prune as lp
from lightning_prune.dynamic import seta_groups, seta_plan, seta_window
from lightning_prune.dynamic.seta import target_keep_ratio


def table(n: int, a: float, b: int) -> np.ndarray:
    """A fixed, irregular loss table (the official code was run on exactly these)."""
    i = np.arange(n)
    return (np.abs(np.sin(i * a)) * 2 + (i % b) * 0.1).astype(np.float32)


# ---------------------------------------------------------------------------------------- official numbers
# Computed by running the official seta.py (commit 341df62, scikit-learn 1.9): for each table (in the
# order given), the rank (0 = easiest) of the group kmeans_group(scores, indices, num_group) put each
# sample in; slide_easy2hard's (first group, number of groups) for iterations 0..7; and, over 1000
# official SeTa.prune() calls (torch/NumPy seeded 0..999) on table(30, 1.3, 6) with prune_ratio=0.3,
# num_group=3, window_scale=0.5 at iteration 1, each sample's frequency of being served and the mean
# number served.
OFFICIAL_GROUPS = {
    (60, 1.7, 7, 5): [0, 3, 1, 3, 2, 3, 3, 1, 2, 1, 3, 1, 4, 1, 3, 1, 3, 2, 3, 3, 2, 2, 1, 3, 0, 4, 1, 4, 1, 2,
                      2, 2, 3, 2, 4, 0, 3, 0, 4, 1, 4, 2, 2, 2, 2, 3, 1, 4, 1, 3, 0, 3, 1, 3, 2, 3, 2, 1, 3, 1],
    (80, 0.9, 5, 10): [0, 6, 8, 4, 5, 8, 6, 0, 7, 9, 3, 4, 9, 7, 1, 6, 8, 4, 4, 9, 5, 0, 7, 9, 4, 3, 8, 6, 1, 8,
                       7, 3, 4, 9, 7, 0, 7, 8, 4, 5, 8, 6, 1, 8, 9, 2, 4, 9, 6, 2, 6, 8, 3, 5, 9, 5, 1, 7, 9, 4,
                       4, 8, 6, 2, 8, 7, 2, 5, 9, 6, 1, 7, 8, 3, 6, 8, 5, 2, 8, 9],
    (45, 2.3, 4, 3): [0, 2, 2, 1, 0, 2, 2, 1, 1, 2, 2, 0, 1, 2, 2, 0, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2, 0, 2, 2, 1,
                      0, 2, 2, 1, 1, 2, 2, 0, 1, 2, 2, 0, 2, 2, 1],
}  # fmt: skip
OFFICIAL_WINDOWS = {
    (5, 0.5): [[0, 5], [1, 2], [2, 2], [3, 2], [0, 2], [1, 2], [2, 2], [3, 2]],
    (5, 0.6): [[0, 5], [1, 3], [2, 3], [0, 3], [1, 3], [2, 3], [0, 3], [1, 3]],
    (5, 0.9): [[0, 5], [1, 4], [0, 4], [1, 4], [0, 4], [1, 4], [0, 4], [1, 4]],
    (10, 0.5): [[0, 10], [1, 5], [2, 5], [3, 5], [4, 5], [5, 5], [0, 5], [1, 5]],
    (10, 0.6): [[0, 10], [1, 6], [2, 6], [3, 6], [4, 6], [0, 6], [1, 6], [2, 6]],
    (10, 0.9): [[0, 10], [1, 9], [0, 9], [1, 9], [0, 9], [1, 9], [0, 9], [1, 9]],
}
OFFICIAL_FREQUENCY = [0.0, 0.701, 0.627, 0.712, 0.704, 0.388, 0.698, 0.174, 0.696, 0.714, 0.636, 0.689, 0.0, 0.693,
                      0.693, 0.693, 0.691, 0.143, 0.7, 0.386, 0.685, 0.704, 0.521, 0.697, 0.004, 0.699, 0.696, 0.671,
                      0.698, 0.01]  # fmt: skip
OFFICIAL_MEAN_SERVED = 16.123


@pytest.mark.parametrize(("n", "a", "b", "num_group"), list(OFFICIAL_GROUPS))
def test_groups_are_the_official_kmeans_groups(n, a, b, num_group):
    groups = seta_groups(table(n, a, b), num_group)
    rank = np.empty(n, dtype=int)
    for position, group in enumerate(groups):
        rank[group] = position
    assert sorted(np.concatenate(groups).tolist()) == list(range(n))  # a partition of the subset
    assert rank.tolist() == OFFICIAL_GROUPS[(n, a, b, num_group)]


@pytest.mark.parametrize(("num_groups", "window_scale"), list(OFFICIAL_WINDOWS))
def test_windows_are_the_official_sliding_windows(num_groups, window_scale):
    windows = [seta_window(num_groups, iteration, window_scale) for iteration in range(8)]
    assert [[w.start, len(w)] for w in windows] == OFFICIAL_WINDOWS[(num_groups, window_scale)]


def test_a_windowed_epoch_has_the_official_plans_distribution():
    losses, draws = table(30, 1.3, 6), 1000
    counts, sizes = np.zeros(30), []
    for draw in range(draws):
        plan, subset = seta_plan(np.arange(30), losses, 1, 0.7, 3, 0.5, False, np.random.default_rng([draw, 1]))
        assert subset == int(30 * 0.7) and set(plan.weights.tolist()) == {1.0}
        counts[plan.indices] += 1
        sizes.append(plan.indices.size)
    # two estimates of each frequency from 1000 draws: the standard error of their difference is <= 0.023
    np.testing.assert_allclose(counts / draws, OFFICIAL_FREQUENCY, atol=0.08)
    assert np.mean(sizes) == pytest.approx(OFFICIAL_MEAN_SERVED, abs=0.3)


def test_equal_or_few_distinct_losses_and_one_group():
    # all equal: torch.chunk's pieces in the order drawn (the official fallback)
    assert [g.tolist() for g in seta_groups(np.full(11, 3.0), 4)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    # fewer distinct losses than groups (a deviation, documented): one group per loss, easiest first
    groups = seta_groups(np.array([2.0, 1.0, 2.0, 1.0, 5.0]), 4)
    assert [g.tolist() for g in groups] == [[1, 3], [0, 2], [4]]
    assert [g.tolist() for g in seta_groups(np.array([0.3, 0.1, 0.2]), 1)] == [[0, 1, 2]]


# ---------------------------------------------------------------------------------------- the official rule
def official_prune(
    scores: np.ndarray, iteration: int, keep_ratio: float, num_group: int, window_scale: float, rng
) -> np.ndarray:
    """SeTa.prune written out in the official code's structure (lists of groups sorted by their mean),
    the random subset drawn as SeTa draws it: the served sample indices, sorted."""
    n = len(scores)
    chosen = rng.permutation(n)[: int(n * keep_ratio)]  # random_select_with_ratio
    subset_scores = scores[chosen]
    if num_group == 1:
        grouped = [list(chosen)]
    elif subset_scores.max() == subset_scores.min():
        grouped = [list(piece.numpy()) for piece in torch.chunk(torch.as_tensor(chosen), num_group)]
    else:  # kmeans_group
        labels = KMeans(n_clusters=num_group, random_state=0, n_init=1).fit(subset_scores[:, None]).labels_
        group_scores: list[list[float]] = [[] for _ in range(num_group)]
        group_indices: list[list[int]] = [[] for _ in range(num_group)]
        for score, index, label in zip(subset_scores, chosen, labels, strict=True):
            group_scores[label].append(score)
            group_indices[label].append(index)
        centres = [np.mean(group) for group in group_scores]
        grouped = [
            group for _, _, group in sorted(zip(centres, group_scores, group_indices, strict=True), key=lambda g: g[0])
        ]
    if iteration == 0:  # slide_easy2hard
        window = grouped
    else:
        width = round(len(grouped) * window_scale)
        start = iteration % (len(grouped) - width + 1)
        window = grouped[start : start + width]
    selected = [index for group in window for index in group]
    return np.sort(np.asarray(selected, dtype=np.int64))


def official_anneal(n: int, keep_ratio: float, rng) -> np.ndarray:
    """SeTa.no_prune: a uniform random int(keep_ratio * n) of the samples ("partial annealing")."""
    return np.sort(rng.permutation(n)[: int(keep_ratio * n)])


def test_plans_over_several_epochs_follow_the_official_rule():
    n, epochs, keep, num_group, scale = 200, 10, 0.8, 5, 0.6
    pruned = math.floor(0.875 * epochs)
    tables = np.random.default_rng(7).gamma(2.0, 0.5, size=(epochs, n)).astype(np.float32)
    pool = np.arange(1000, 1000 + n)  # the plan maps positions onto any pool
    state = np.full(n, 3.0, dtype=np.float32)  # the official initial score
    for epoch in range(epochs):
        annealing = epoch >= pruned
        plan, _ = seta_plan(pool, state, epoch, keep, num_group, scale, annealing, np.random.default_rng([9, epoch]))
        rng = np.random.default_rng([9, epoch])
        expected = (
            official_anneal(n, keep, rng) if annealing else official_prune(state, epoch, keep, num_group, scale, rng)
        )
        np.testing.assert_array_equal(plan.indices, pool[expected])
        np.testing.assert_array_equal(plan.weights, np.ones(expected.size, dtype=np.float32))
        if 0 < epoch < pruned:
            assert plan.indices.size < int(n * keep)  # the window left groups out
        state[expected] = tables[epoch][expected]  # only served samples get a new loss


@pytest.mark.parametrize("annealing", [False, True])
def test_epoch_zero_and_annealing_serve_a_uniform_random_share(annealing):
    counts, draws, n = np.zeros(40), 2000, 40
    for draw in range(draws):
        plan, subset = seta_plan(np.arange(n), table(n, 1.1, 3), 0 if not annealing else 5, 0.6, 4, 0.5, annealing,
                                 np.random.default_rng([draw, 0]))  # fmt: skip
        assert plan.indices.size == subset == int(n * 0.6)
        counts[plan.indices] += 1
    np.testing.assert_allclose(counts / draws, 0.6, atol=0.05)  # 4.5 standard errors


def seta_reference_run() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The worker's SeTa over the known-logits model, by the official rule: each epoch's served set,
    weights (all 1) and the final losses (0 where never served, as the collector's state)."""
    settings = SETA_SETTINGS
    keep = 1.0 - settings["prune_ratio"]
    model = WeightedKnownLogits()
    labels = make_labels()
    with torch.no_grad():
        losses = [
            F.cross_entropy(model.head(model.features[e]), labels, reduction="none").numpy() for e in range(EPOCHS)
        ]
    scores = np.full(NUM_SAMPLES, 3.0, dtype=np.float32)
    seen = np.zeros(NUM_SAMPLES, dtype=bool)
    served_sets, weight_rows = [], []
    for epoch in range(EPOCHS):
        rng = np.random.default_rng([settings["seed"], epoch])
        if epoch < math.floor(settings["delta"] * EPOCHS):
            served = official_prune(scores, epoch, keep, settings["num_group"], settings["window_scale"], rng)
        else:
            served = official_anneal(NUM_SAMPLES, keep, rng)
        served_sets.append(served)
        weight_rows.append(np.ones(NUM_SAMPLES))
        scores[served] = losses[epoch][served]
        seen[served] = True
    return served_sets, weight_rows, np.where(seen, scores, 0.0).astype(np.float32)


def test_the_worker_reference_prunes_every_epoch():
    served_sets, _, _ = seta_reference_run()
    assert all(s.size < NUM_SAMPLES for s in served_sets)
    assert [s.size for s in served_sets[-2:]] == [int(NUM_SAMPLES * 0.7)] * 2  # partial annealing


# ---------------------------------------------------------------------------------------- target_saving
@pytest.mark.parametrize("target", [0.3, 0.4, 0.5, 0.6])
def test_target_keep_ratios_reach_the_target_over_changing_losses(target):
    n, epochs, num_group, scale = 500, 12, 5, 0.6
    pruned = math.floor(0.875 * epochs)
    rng = np.random.default_rng(1)
    state = np.full(n, 3.0, dtype=np.float32)
    history: dict[int, tuple[int, int]] = {}
    for epoch in range(epochs):
        keep = target_keep_ratio(target, epoch, epochs, pruned, n, history, num_group, scale)
        plan, subset = seta_plan(
            np.arange(n), state, epoch, keep, num_group, scale, epoch >= pruned, np.random.default_rng([0, epoch])
        )
        history[epoch] = (subset, int(plan.indices.size))
        state[plan.indices] = rng.gamma(2.0, 0.5 / (1 + epoch), size=plan.indices.size)  # the model learns
    skipped = 1 - sum(served for _, served in history.values()) / (n * epochs)
    assert skipped == pytest.approx(target, abs=0.01)


def test_target_saving_in_a_fit_ends_within_a_point_and_resumes_the_same_ratios(tmp_path):
    seta = lp.SeTa(target_saving=0.5, num_group=5, window_scale=0.6)
    fit(UserModel(), seta, datamodule=seta.wrap(digits()), epochs=8)
    assert seta.fraction_skipped == pytest.approx(0.5, abs=0.01)
    assert seta.hparams()["target_saving"] == 0.5 and seta.hparams()["prune_ratio"] is None

    # the ratios depend on the earlier epochs' plans, which the checkpoint keeps
    def target_seta() -> lp.SeTa:
        return lp.SeTa(target_saving=0.4, num_group=3, window_scale=0.5, delta=0.75, seed=2)

    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    whole.mkdir(), crashed.mkdir()
    uninterrupted = target_seta()
    fit_dynamic(uninterrupted, str(whole))
    assert fit_dynamic(target_seta(), str(crashed), crash_epoch=5) is None
    resumed = target_seta()
    fit_dynamic(resumed, str(crashed), ckpt_path=str(crashed / "last.ckpt"))
    for epoch in range(EPOCHS):
        a, b = (np.load(d / f"rank0_epoch{epoch}.npz")["indices"] for d in (whole, crashed))
        assert sorted(a.tolist()) == sorted(b.tolist())
    assert resumed.planned == uninterrupted.planned and resumed.served == uninterrupted.served


# ---------------------------------------------------------------------------------------- fits and checks
def test_a_fit_ignoring_weights_prunes_every_epoch_with_unit_weights():
    # SeTa serves weight 1, so a loss that ignores the batch weights is right (no weight check)
    seen: list[set[float]] = []

    class Weights(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(set(batch[3].tolist()))

    seta = lp.SeTa(prune_ratio=0.2, num_group=5, window_scale=0.6)
    fit(UserModel("ignored"), seta, Weights(), datamodule=seta.wrap(digits()), epochs=4)
    assert set().union(*seen) == {1.0}
    assert all(kept < full for kept, full in seta.served.values())
    assert seta.planned[0][0] == seta.planned[0][1] == seta.served[0][0]  # epoch 0: the whole random subset
    assert seta.fraction_skipped > 0.2


def test_over_a_static_selection_it_plans_within_it():
    dm = digits()
    scores = lp.Scores(np.random.default_rng(0).random(len(dm.train_dataset)), "toy", labels=dm.targets)
    selection = lp.select(scores, 0.5, strategy="topk")
    seta = lp.SeTa(prune_ratio=0.1, num_group=4)
    indices: list[int] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            indices.extend(batch[2].tolist())

    fit(UserModel(), seta, Record(), datamodule=seta.wrap(lp.PrunedDataModule(dm, selection)), epochs=3)
    assert set(indices) <= set(selection.indices.tolist())
    assert seta.planned[0][0] == int(len(selection) * 0.9)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: lp.SeTa(prune_ratio=0.95), ValueError, r"prune_ratio=0.95 must lie in \[0, 0.9\]"),
        (lambda: lp.SeTa(prune_ratio="half"), TypeError, "prune_ratio='half'"),
        (lambda: lp.SeTa(prune_ratio=0.3, target_saving=0.5), ValueError, "not both"),
        (lambda: lp.SeTa(target_saving=1.0), ValueError, r"target_saving=1.0 must lie in \(0, 1\)"),
        (lambda: lp.SeTa(target_saving=True), TypeError, "target_saving=True"),
        (lambda: lp.SeTa(num_group=0), ValueError, "num_group=0"),
        (lambda: lp.SeTa(num_group=2.5), TypeError, "num_group=2.5"),
        (lambda: lp.SeTa(window_scale=0.0), ValueError, "window_scale=0.0"),
        (lambda: lp.SeTa(num_group=2, window_scale=0.2), ValueError, r"round\(num_group \* window_scale\) >= 1"),
        (lambda: lp.SeTa(delta=1.5), ValueError, "SeTa delta=1.5"),
        (lambda: lp.SeTa(num_epochs=0), ValueError, "SeTa num_epochs=0"),
        (lambda: lp.SeTa(seed=-1), ValueError, "seed=-1"),
        (lambda: lp.SeTa(initial_loss=float("nan")), ValueError, "initial_loss=nan"),
        (lambda: lp.SeTa(loss_fn="ce"), TypeError, "SeTa loss_fn='ce'"),
    ],
)
def test_bad_settings_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_wrapped_module_without_the_callback_is_refused():
    seta = lp.SeTa(prune_ratio=0.3)
    with pytest.raises(ValueError, match=r"not among the Trainer's callbacks.*callbacks=\[seta"):
        fit(UserModel(), datamodule=seta.wrap(digits()))


def test_a_loader_seta_does_not_plan_is_refused():
    with pytest.raises(ValueError, match=r"seta\.wrap\(datamodule\)"):
        fit(UserModel(), lp.SeTa(prune_ratio=0.3), datamodule=digits(), epochs=3)


def test_a_loss_fn_that_is_not_per_sample_is_refused():
    seta = lp.SeTa(prune_ratio=0.3, loss_fn=F.cross_entropy)
    with pytest.raises(ValueError, match=r"SeTa: loss_fn must hold one loss per sample.*shape \(\)"):
        fit(UserModel(), seta, datamodule=seta.wrap(digits()), epochs=3)


def test_a_non_finite_loss_fails_at_the_epoch_end_naming_the_samples():
    def loss_fn(logits, targets):
        loss = F.cross_entropy(logits, targets, reduction="none")
        return torch.where(targets == 3, torch.full_like(loss, float("nan")), loss)

    seta = lp.SeTa(prune_ratio=0.3, loss_fn=loss_fn)
    with pytest.raises(FloatingPointError, match=r"SeTa: loss_fn gave a non-finite loss .* epoch 0.*k-means"):
        fit(UserModel(), seta, datamodule=seta.wrap(digits()), epochs=3)


def test_a_fit_that_never_prunes_is_refused_and_one_that_never_anneals_warns():
    with pytest.raises(ValueError, match=r"SeTa\(prune_ratio=0, delta=0.875\) over max_epochs=2 never prunes"):
        lp.SeTa().check_length(2)
    lp.SeTa(prune_ratio=0.2).check_length(2)  # the random share prunes from epoch 0
    seta = lp.SeTa(prune_ratio=0.2, num_epochs=8)
    with pytest.warns(UserWarning, match=r"max_epochs=3: this fit never anneals"):
        fit(UserModel(), seta, datamodule=seta.wrap(digits()), epochs=3)


def test_a_step_counted_schedule_and_a_binding_max_steps_are_refused_naming_seta():
    seta = lp.SeTa(prune_ratio=0.3)
    with pytest.raises(ValueError, match=r"SeTa's pruned epochs are shorter.*lp\.progress_cosine"):
        fit(UserModel(schedule="cosine"), seta, datamodule=seta.wrap(digits()))
    seta = lp.SeTa(prune_ratio=0.3)
    with pytest.raises(ValueError, match=r"max_steps=30.*SeTa plans by epochs"):
        fit(UserModel(), seta, datamodule=seta.wrap(digits()), epochs=8, max_steps=30)


def test_a_subset_too_small_to_group_is_refused():
    with pytest.raises(ValueError, match=r"num_group=10\) groups the 9 samples"):
        seta_plan(np.arange(10), table(10, 1.0, 3), 1, 0.9, 10, 0.5, False, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------- the pipeline
@pytest.mark.slow
def test_seta_is_a_dynamic_row_of_the_study(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    methods = "[{name: seta, args: {num_group: 5, window_scale: 0.6}}]"
    run_cli("run", config, out, "--methods", methods, "--prune_ratios", "[0.2]", "--train_epochs", "4")
    cell = json.loads((out / "cells" / "seta-r0.20-s0.json").read_text())
    full = json.loads((out / "cells" / "full-r0.00-s0.json").read_text())
    assert cell["dynamic"] is True and cell["num_train"] is None
    # every epoch draws 80%; epochs 1 and 2 serve a window of it on top
    assert 0.2 < cell["fraction_skipped"] < 1.0
    assert cell["train_samples_forwarded"] == round((1 - cell["fraction_skipped"]) * full["train_samples_forwarded"])
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["total_cost"]["seta"]["0.20"]["relative"] < 1


def test_the_pipeline_knows_seta_and_refuses_its_settings_it_sets():
    from lightning_prune.pipeline.methods import DYNAMIC_METHODS, MethodSpec, known_methods, method_for

    assert "seta" in known_methods() and method_for("seta") is DYNAMIC_METHODS["seta"]
    method = method_for("seta")
    method.check(MethodSpec("seta", args={"num_group": 5}), [0.2, 0.5])
    with pytest.raises(ValueError, match=r"\(seta\) sets args.seed"):
        method.check(MethodSpec("seta", args={"seed": 1}), [0.2])
    with pytest.raises(ValueError, match="window_scale=2"):
        method.check(MethodSpec("seta", args={"window_scale": 2}), [0.2])
