"""Rules of the baseline collectors, the feature-space selectors, k-means and the registry.

Exactness against brute-force references, DDP and resume are covered for every collector through
``collector_harness.CASES`` in ``test_collectors.py``; this file checks what is specific to a method.
"""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from collector_harness import (
    EPOCHS,
    HIDDEN,
    NUM_CLASSES,
    NUM_SAMPLES,
    KnownLogitsModel,
    entropy_reference,
    final_features,
    fit,
    grand_reference,
    make_labels,
    make_loader,
    margins,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_prune as lp
from lightning_prune.collectors import (
    AUM,
    COLLECTORS,
    EL2N,
    DynamicUncertainty,
    Entropy,
    GraNd,
    Herding,
    Moderate,
    Prototypicality,
    kmeans,
    make_collector,
)
from lightning_prune.collectors.herding import herding_order
from lightning_prune.selection import select


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kwargs,
    )


def _bytes_per_sample(collector: lp.ScoreCollector) -> int:
    buffers = collector.state_dict()["buffers"]
    return sum(buffer.numel() * buffer.element_size() for buffer in buffers.values()) // NUM_SAMPLES


# ---------------------------------------------------------------------------------------------- EL2N, GraNd


def test_el2n_range_beyond_max_epochs_fails_before_training():
    with pytest.raises(ValueError, match=r"averages epochs 2\.\.11 but the Trainer stops after max_epochs=8"):
        fit([EL2N(epochs=(2, 12))])
    with pytest.raises(ValueError, match=r"GraNd.*epochs 0\.\.19.*max_epochs=8"):
        fit([GraNd(epochs=20)])


@pytest.mark.parametrize("epochs", [0, (5, 3), (-1, 2), "10", (1.0, 2.0), True, (1, 2, 3)])
def test_bad_epoch_ranges_are_refused(epochs):
    with pytest.raises((TypeError, ValueError), match="EL2N epochs"):
        EL2N(epochs=epochs)


def test_only_aum_accepts_all_epochs():
    assert AUM(epochs=None).epochs == (0, None)
    with pytest.raises(TypeError, match="EL2N epochs must be an int n"):
        EL2N(epochs=None)


@pytest.mark.parametrize("bias", [True, False], ids=["with-bias", "no-bias"])
def test_grand_equals_autograd_norm_of_the_last_layer_gradient(bias):
    model = KnownLogitsModel()
    if not bias:
        with torch.no_grad():
            model.head.bias.zero_()  # same logits as a bias-free layer, whose gradient has no bias part
        weight = model.head.weight.detach().clone()
        model.head = nn.Linear(HIDDEN, NUM_CLASSES, bias=False)
        with torch.no_grad():
            model.head.weight.copy_(weight)
        model.head.requires_grad_(False)
    grand = GraNd(epochs=3)
    fit([grand], model=model)

    head = nn.Linear(HIDDEN, NUM_CLASSES, bias=bias).double()
    head.load_state_dict(model.head.state_dict())
    labels = make_labels()
    expected = np.zeros(NUM_SAMPLES)
    for epoch in range(3):
        for i in range(NUM_SAMPLES):
            head.zero_grad()
            F.cross_entropy(head(model.features[epoch, i : i + 1].double()), labels[i : i + 1]).backward()
            expected[i] += torch.cat([p.grad.flatten() for p in head.parameters()]).norm().item() / 3
    np.testing.assert_allclose(grand.scores.values, expected, rtol=1e-5)


def test_grand_says_which_layer_to_name_when_no_features_are_captured():
    class UnusedLastLinear(KnownLogitsModel):
        def __init__(self):
            super().__init__()
            self.spare = nn.Linear(3, 3)  # registered last, never called

    with pytest.raises(ValueError, match="was not called.*feature_layer="):
        fit([GraNd(epochs=2)], model=UnusedLastLinear())
    grand = GraNd(epochs=2, feature_layer="head")
    _, model = fit([grand], model=UnusedLastLinear())
    np.testing.assert_allclose(grand.scores.values, grand_reference(model.trajectory(), (0, 2)), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="feature_layer='classifier' names no submodule"):
        fit([GraNd(epochs=2, feature_layer="classifier")])


# ---------------------------------------------------------------------------------------------- AUM


@pytest.fixture(scope="module")
def aum_run():
    aum = AUM()
    _, model = fit([aum])
    return aum.scores, model.trajectory()


def test_aum_scores_are_negative_mean_margin_and_extras_hold_the_sum(aum_run):
    scores, trajectory = aum_run
    per_epoch = margins(trajectory)
    np.testing.assert_allclose(scores.extras["accumulated_margin"], per_epoch.sum(axis=0), rtol=1e-5, atol=1e-6)
    # low margin = hard = keep: the lowest-margin sample has the highest score
    assert np.argmax(scores.values) == np.argmin(per_epoch.mean(axis=0))


def test_ccs_cuts_off_the_lowest_accumulated_margins(aum_run):
    scores, _ = aum_run
    selection = select(scores, prune_ratio=0.5, strategy="ccs", ccs_beta=0.2, seed=0)
    hardest = np.argsort(scores.extras["accumulated_margin"], kind="stable")[: round(0.2 * NUM_SAMPLES)]
    assert not set(hardest.tolist()) & set(selection.indices.tolist())


def test_aum_refuses_an_unknown_margin():
    with pytest.raises(ValueError, match="AUM margin must be one of"):
        AUM(margin="loss")


# ---------------------------------------------------------------------------------------------- Dyn-Unc, Entropy


@pytest.mark.parametrize("window", [1, 2.5, "10", True])
def test_dynamic_uncertainty_window_must_be_an_integer_of_at_least_two(window):
    with pytest.raises(ValueError, match="window must be an integer >= 2"):
        DynamicUncertainty(window=window)


def test_dynamic_uncertainty_window_longer_than_the_run():
    with pytest.raises(ValueError, match=r"window=10\) needs at least 10 training epochs.*max_epochs=8"):
        fit([DynamicUncertainty(window=10)])


def test_source_and_dataloader_are_checked():
    with pytest.raises(ValueError, match="source must be one of"):
        DynamicUncertainty(source="eval")
    with pytest.raises(ValueError, match="dataloader= is only read by the eval pass"):
        DynamicUncertainty(dataloader=make_loader())
    with pytest.raises(TypeError, match="must be a torch.utils.data.DataLoader"):
        Entropy(source="eval_pass", dataloader=[1, 2, 3])


def test_entropy_epoch_rules():
    with pytest.raises(ValueError, match=r"Entropy\(epoch=8\).*max_epochs=8"):
        fit([Entropy(epoch=8)])
    with pytest.raises(ValueError, match="Use one or the other"):
        Entropy(epoch=3, source="eval_pass")
    with pytest.raises(ValueError, match="epoch number >= 0"):
        Entropy(epoch=-1)


def test_entropy_of_the_final_epoch_survives_early_stopping():
    class StopAfterEpoch2(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = trainer.current_epoch == 2

    entropy = Entropy()
    _, model = fit([entropy], extra_callbacks=[StopAfterEpoch2()])
    np.testing.assert_allclose(entropy.scores.values, entropy_reference(model.trajectory(), 2), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- eval pass


class _EvalDiffersModel(KnownLogitsModel):
    """Eval-mode logits are twice the training ones; records the mode and grad state of each forward."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        logits = super().forward(x)
        return logits if self.training else 2 * logits


def test_eval_pass_runs_the_final_model_in_eval_mode_without_gradients():
    model = _EvalDiffersModel()
    entropy = Entropy(source="eval_pass")
    fit([entropy], model=model)
    batches = len(make_loader())
    assert model.calls[-batches - 1 :] == [(True, True)] + [(False, False)] * batches  # one pass, after training
    assert model.training  # back in training mode afterwards
    logits = 2 * model.trajectory().logits[-1]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(entropy.scores.values, -(probs * np.log(probs)).sum(axis=1), rtol=1e-5, atol=1e-6)


def test_eval_pass_restores_submodules_kept_in_eval_mode():
    class FrozenPart(KnownLogitsModel):
        def __init__(self):
            super().__init__()
            self.frozen = nn.Dropout(0.5)
            self.frozen_modes: list[bool] = []

        def on_train_start(self):  # Lightning keeps this mode across epochs; the eval pass must too
            self.frozen.eval()

        def training_step(self, batch, batch_idx):
            self.frozen_modes.append(self.frozen.training)
            return super().training_step(batch, batch_idx)

    model = FrozenPart()
    fit([DynamicUncertainty(window=2, source="eval_pass")], model=model, epochs=3)
    assert model.frozen_modes == [False] * len(model.frozen_modes)
    assert model.training


def test_eval_pass_reads_the_given_dataloader():
    # this loader feeds sample (i + 1) % N's input under sample i's index and label
    shifted = torch.roll(torch.arange(NUM_SAMPLES, dtype=torch.float32), -1).unsqueeze(1)
    loader = DataLoader(lp.IndexedDataset(TensorDataset(shifted, make_labels())), batch_size=5)
    entropy = Entropy(source="eval_pass", dataloader=loader)
    _, model = fit([entropy])
    expected = entropy_reference(model.trajectory())[np.roll(np.arange(NUM_SAMPLES), -1)]
    np.testing.assert_allclose(entropy.scores.values, expected, rtol=1e-5, atol=1e-6)


def test_eval_pass_shards_a_given_dataloader_across_ddp_ranks():
    loader = make_loader(shuffle=False)
    entropy = Entropy(source="eval_pass", dataloader=loader)
    shards = [
        entropy._eval_loader(SimpleNamespace(world_size=2, global_rank=rank, train_dataloader=None)) for rank in (0, 1)
    ]
    indices = [torch.cat([batch[2] for batch in shard]) for shard in shards]
    assert [len(part) for part in indices] == [19, 19]  # DistributedSampler pads 37 to 38
    assert set(torch.cat(indices).tolist()) == set(range(NUM_SAMPLES))
    assert all(shard.batch_size == loader.batch_size for shard in shards)


def test_eval_pass_over_batches_without_indices_names_indexed_dataset():
    loader = DataLoader(TensorDataset(torch.zeros(NUM_SAMPLES, 1), make_labels()), batch_size=4)
    with pytest.raises(ValueError, match="IndexedDataset"):
        fit([Herding(dataloader=loader)])


# ---------------------------------------------------------------------------------------------- feature selectors


@pytest.fixture(scope="module")
def feature_run():
    collectors = {
        "herding": Herding(),
        "moderate_mean": Moderate(centre="mean"),
        "global": Prototypicality(per_class=False, seed=3),
        "global_easy": Prototypicality(num_clusters=3, per_class=False, metric="euclidean", keep="easy", seed=3),
        "per_class_3": Prototypicality(num_clusters=3),
    }
    _, model = fit(list(collectors.values()))
    return collectors, model.trajectory()


def test_features_are_stored_once_in_float16(feature_run):
    collectors, _ = feature_run
    herding = collectors["herding"]
    features = herding.state_dict()["buffers"]["features"]
    assert features.dtype == torch.float16 and features.shape == (NUM_SAMPLES, HIDDEN)
    assert herding.epochs_collected == 1


def test_herding_ranks_are_a_permutation_per_class_and_class_balanced_keeps_the_first_picks(feature_run):
    collectors, trajectory = feature_run
    scores = collectors["herding"].scores
    ranks, labels = scores.extras["herding_rank"], trajectory.labels
    for label in np.unique(labels):
        np.testing.assert_array_equal(np.sort(ranks[labels == label]), np.arange((labels == label).sum()))
    selection = select(scores, prune_ratio=0.5, strategy="class_balanced")
    kept = np.zeros(NUM_SAMPLES, dtype=bool)
    kept[selection.indices] = True
    for label in np.unique(labels):
        members = labels == label
        assert set(ranks[members & kept].tolist()) == set(range(int((members & kept).sum())))


def test_herding_order_tracks_the_mean_better_than_random_orders():
    points = torch.randn(60, 8, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 3, 8)
    order = herding_order(points)
    assert sorted(order.tolist()) == list(range(60))
    mean = points.mean(dim=0)
    assert order[0] == (points - mean).norm(dim=1).argmin()

    def gaps(sequence):
        running = points[sequence].cumsum(dim=0) / torch.arange(1, 61).unsqueeze(1)
        return (running - mean).norm(dim=1)

    herded = gaps(order)
    shuffled = torch.stack([gaps(torch.randperm(60, generator=torch.Generator().manual_seed(s))) for s in range(20)])
    assert (herded[:30] < shuffled[:, :30].mean(dim=0)).all()


def test_moderate_mean_centre_and_band_selection(feature_run):
    collectors, trajectory = feature_run
    scores = collectors["moderate_mean"].scores
    features, labels = final_features(trajectory), trajectory.labels
    centres = np.stack([features[labels == c].mean(axis=0) for c in range(NUM_CLASSES)])
    distance = np.linalg.norm(features - centres[labels], axis=1)
    np.testing.assert_allclose(scores.extras["distance"], distance, rtol=1e-5)
    kept = select(scores, prune_ratio=0.6, strategy="topk").indices
    # the kept samples are one contiguous band of sorted distances around the median
    positions = np.sort(np.argsort(np.argsort(distance))[kept])
    assert positions[-1] - positions[0] == kept.size - 1
    assert positions[0] <= NUM_SAMPLES // 2 <= positions[-1]


def test_global_prototypes_are_the_kmeans_of_all_features(feature_run):
    collectors, trajectory = feature_run
    features = torch.from_numpy(final_features(trajectory)).to(torch.float16)
    cosine = kmeans(features, NUM_CLASSES, seed=3, metric="cosine")
    scores = collectors["global"].scores
    np.testing.assert_allclose(scores.values, cosine.distance.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores.extras["cluster"], cosine.assignment.numpy())
    euclidean = kmeans(features, 3, seed=3, metric="euclidean")
    np.testing.assert_allclose(collectors["global_easy"].scores.values, -euclidean.distance.numpy(), rtol=1e-5)


def test_per_class_prototypes_stay_inside_their_class(feature_run):
    collectors, trajectory = feature_run
    cluster = collectors["per_class_3"].scores.extras["cluster"]
    np.testing.assert_array_equal(cluster // 3, trajectory.labels)


def test_feature_scores_round_trip_through_a_file(feature_run, tmp_path):
    collectors, _ = feature_run
    scores = collectors["per_class_3"].scores
    loaded = lp.Scores.load(scores.save(tmp_path / "proto.npz"))
    np.testing.assert_array_equal(loaded.values, scores.values)
    np.testing.assert_array_equal(loaded.extras["cluster"], scores.extras["cluster"])


def test_float16_overflow_asks_for_float32():
    model = KnownLogitsModel()
    with torch.no_grad():
        model.features.mul_(1e5)
        model.head.weight.div_(1e5)
    half, full = Moderate(), Moderate(precision="float32")
    fit([half, full], model=model)
    with pytest.raises(FloatingPointError, match="precision='float32'"):
        half.scores
    assert np.isfinite(full.scores.values).all()


def test_feature_selector_settings_are_checked():
    with pytest.raises(ValueError, match="needs source='train'"):
        Herding(epoch=3)
    with pytest.raises(ValueError, match="precision must be one of"):
        Moderate(precision="bfloat16")
    with pytest.raises(ValueError, match="centre must be one of"):
        Moderate(centre="mode")
    with pytest.raises(ValueError, match="keep must be 'hard'"):
        Prototypicality(keep="far")
    with pytest.raises(ValueError, match="metric must be one of"):
        Prototypicality(metric="manhattan")
    with pytest.raises(ValueError, match=r"Herding\(epoch=9\).*max_epochs=8"):
        fit([Herding(source="train", epoch=9)])


def test_reading_features_from_the_final_epoch_needs_max_epochs():
    trainer = _trainer(max_epochs=-1, max_steps=3, callbacks=[Herding(source="train")])
    with pytest.raises(ValueError, match=r"needs Trainer\(max_epochs=...\)"):
        trainer.fit(KnownLogitsModel(), train_dataloaders=make_loader())


def test_too_many_global_prototypes():
    prototypes = Prototypicality(num_clusters=NUM_SAMPLES + 1, per_class=False)
    fit([prototypes], epochs=1)
    with pytest.raises(ValueError, match="more prototypes than the 37 samples"):
        prototypes.scores


# ---------------------------------------------------------------------------------------------- k-means


def _blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    truth = torch.arange(3).repeat_interleave(40)
    return centres[truth] + torch.randn(120, 3, generator=generator), truth


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_kmeans_recovers_separated_blobs_and_is_a_lloyd_fixed_point(metric):
    points, truth = _blobs()
    result = kmeans(points, 3, seed=1, metric=metric)
    assert result.converged
    # the same partition as the truth, up to renaming the clusters
    assert len({(int(a), int(b)) for a, b in zip(result.assignment, truth, strict=True)}) == 3
    data = F.normalize(points, dim=1) if metric == "cosine" else points
    for cluster in range(3):
        centre = data[result.assignment == cluster].mean(dim=0)
        centre = F.normalize(centre, dim=0) if metric == "cosine" else centre
        torch.testing.assert_close(result.centroids[cluster], centre, rtol=1e-5, atol=1e-5)
    if metric == "cosine":
        nearest = (data @ result.centroids.T).argmax(dim=1)
    else:
        nearest = torch.cdist(data, result.centroids).argmin(dim=1)
    torch.testing.assert_close(result.assignment, nearest)


def test_kmeans_is_deterministic_and_independent_of_chunking():
    points = torch.randn(200, 5, generator=torch.Generator().manual_seed(4)).to(torch.float16)
    first, again = kmeans(points, 6, seed=7), kmeans(points, 6, seed=7)
    chunked = kmeans(points, 6, seed=7, chunk_size=13)
    for other in (again, chunked):
        torch.testing.assert_close(first.centroids, other.centroids, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(first.assignment, other.assignment)
    assert first.iterations == again.iterations


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.zeros(5, 2), 6), {}, "between 1 and the number of points"),
        ((torch.zeros(5, 2), 0), {}, "between 1 and the number of points"),
        ((torch.zeros(5), 2), {}, r"\[N, H\]"),
        ((torch.zeros(5, 2), 2), {"metric": "l1"}, "metric must be one of"),
        ((torch.zeros(5, 2), 2), {"iterations": 0}, "iterations must be a positive integer"),
    ],
)
def test_kmeans_refuses_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kmeans(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- registry, memory


def test_registry_names_every_collector_by_its_method():
    assert set(COLLECTORS) == {
        "tdds",
        "forgetting",
        "el2n",
        "grand",
        "aum",
        "dynamic_uncertainty",
        "dual",
        "entropy",
        "herding",
        "moderate",
        "prototypicality",
    }
    for name, cls in COLLECTORS.items():
        assert cls.method == name
        assert isinstance(make_collector(name), cls)
    assert make_collector("el2n", epochs=(1, 4)).epochs == (1, 4)


def test_unknown_collector_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown collector 'el2' ?; known collectors: aum, .*prototypicality"):
        make_collector("el2")
    with pytest.raises(TypeError, match=r"make_collector\('aum', \.\.\.\).*help\(AUM\)"):
        make_collector("aum", window=3)


def test_per_sample_state_does_not_grow_with_epochs():
    base = 8 + 1 + 4  # labels, seen, times_seen
    predicted = 4  # the int32 predicted label of collectors that record predictions (lp.mislabelled)
    collectors = {
        "el2n": (EL2N(epochs=EPOCHS), base + 8 + predicted),
        "grand": (GraNd(epochs=EPOCHS), base + 8),
        "aum": (AUM(), base + 8 + predicted),
        "entropy": (Entropy(), base + 4),
        "dynamic_uncertainty": (DynamicUncertainty(window=3), base + 4 * (3 + 1)),
        "herding": (Herding(), base + 2 * HIDDEN),
    }
    fit([collector for collector, _ in collectors.values()])
    assert {name: _bytes_per_sample(c) for name, (c, _) in collectors.items()} == {
        name: size for name, (_, size) in collectors.items()
    }
