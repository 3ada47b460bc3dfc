"""InfoBatch: its plan against the rule written out by hand, on 1 and 2 processes, across a crash and
resume (these and the no-host-sync run also for SeTa, against its official rule), inside a real
training (epoch length, weights, validation, learning rate), over a static selection, and with bad
settings."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from collector_harness import BATCH_SIZE, EPOCHS, NUM_SAMPLES, host_syncs_in_middle_batches, make_dataset, make_labels
from ddp_infobatch_worker import DELTA, PLANNERS, PRUNE_RATIO, SEED, WeightedKnownLogits, run
from torch import nn

import lightning_prune as lp
from lightning_prune.dynamic import infobatch_plan

TESTS = os.path.dirname(os.path.abspath(__file__))


def reference_run() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Each epoch's served set and weights, and the final losses, by the rule of the paper written out
    plainly: well learned = known loss below the mean; keep int((1 - r) n) of them, weight 1 / (1 - r)."""
    model = WeightedKnownLogits()
    labels = make_labels()
    with torch.no_grad():
        losses = [
            F.cross_entropy(model.head(model.features[e]), labels, reduction="none").numpy() for e in range(EPOCHS)
        ]
    state, known = np.zeros(NUM_SAMPLES, dtype=np.float32), np.zeros(NUM_SAMPLES, dtype=bool)
    served_sets, weight_rows = [], []
    for epoch in range(EPOCHS):
        served, weights = np.ones(NUM_SAMPLES, dtype=bool), np.ones(NUM_SAMPLES)
        if epoch < math.floor(DELTA * EPOCHS) and known.any():
            well = known & (state.astype(np.float64) < state[known].astype(np.float64).mean())
            candidates = np.flatnonzero(well)
            kept = np.random.default_rng([SEED, epoch]).choice(
                candidates, int((1 - PRUNE_RATIO) * candidates.size), replace=False
            )
            served = ~well
            served[kept] = True
            weights[kept] = 1 / (1 - PRUNE_RATIO)
        served_sets.append(np.flatnonzero(served))
        weight_rows.append(weights)
        state[served] = losses[epoch][served]
        known |= served
    return served_sets, weight_rows, state


@pytest.fixture(scope="module", params=sorted(PLANNERS))
def method(request) -> str:
    """The dynamic method the shared runs (one process, DDP, resume, no host sync) cover."""
    return request.param


@pytest.fixture(scope="module")
def reference(method):
    """The method's plans by its rule written out plainly (SeTa's: the official code's structure)."""
    if method == "seta":
        from test_seta import seta_reference_run

        return seta_reference_run()
    return reference_run()


def epoch_record(out, rank: int, epoch: int):
    return np.load(os.path.join(out, f"rank{rank}_epoch{epoch}.npz"))


def test_plan_follows_the_rule():
    pool = np.arange(100, 200)
    losses = np.linspace(0.0, 2.0, 100)
    known = np.ones(100, dtype=bool)
    known[:10] = False  # unknown samples are never well learned, whatever their stored value
    plan = infobatch_plan(pool, losses, known, 0.75, np.random.default_rng(0))
    well = known & (losses < losses[known].mean())
    assert set(pool[~well]) <= set(plan.indices)  # every sample not well learned is served ...
    kept_well = np.isin(plan.indices, pool[well])
    assert kept_well.sum() == int(0.25 * well.sum())  # ... and a quarter of the well-learned ones
    np.testing.assert_array_equal(plan.weights[kept_well], 4.0)
    np.testing.assert_array_equal(plan.weights[~kept_well], 1.0)
    assert len(set(plan.indices)) == plan.indices.size and plan.skipped == 100 - plan.indices.size
    full = infobatch_plan(pool, losses, known, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(full.indices, pool)


@pytest.mark.parametrize(("delta", "epochs", "pruned"), [(0.875, 8, 7), (0.875, 200, 175), (0.875, 10, 8), (1.0, 5, 5)])
def test_annealing_keeps_the_official_count_of_pruned_epochs(delta, epochs, pruned):
    # the official sampler prunes while its iteration count (epoch + 1) is at most delta * epochs
    assert lp.InfoBatch(delta=delta).pruned_epochs(epochs) == pruned
    assert sum(e + 1 <= delta * epochs for e in range(epochs)) == pruned


def test_one_process_serves_the_reference_plan(tmp_path, method, reference):
    served_sets, weight_rows, final = reference
    run(str(tmp_path), 1, method=method)
    for epoch in range(EPOCHS):
        record = epoch_record(tmp_path, 0, epoch)
        assert sorted(record["indices"].tolist()) == served_sets[epoch].tolist()
        np.testing.assert_array_equal(record["weights"], weight_rows[epoch][record["indices"]])
        assert (
            int(record["batches"]) == int(record["num_training_batches"]) == -(-served_sets[epoch].size // BATCH_SIZE)
        )
    assert any(s.size < NUM_SAMPLES for s in served_sets[1:6])
    assert served_sets[-1].size == (NUM_SAMPLES if method == "infobatch" else int(0.7 * NUM_SAMPLES))  # annealed
    result = np.load(tmp_path / "rank0.npz")
    np.testing.assert_allclose(result["loss"], final, rtol=1e-6)
    assert [tuple(row) for row in result["served"]] == [(s.size, NUM_SAMPLES) for s in served_sets]


@pytest.mark.slow
def test_two_ddp_processes_serve_the_same_plan_in_equal_shares(tmp_path, method, reference):
    served_sets, weight_rows, final = reference
    # the checkout's package first: the worker must run the code under test, not an installed copy
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [TESTS, os.path.dirname(TESTS), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, os.path.join(TESTS, "ddp_infobatch_worker.py"), f"--method={method}", str(tmp_path), "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(TESTS),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for epoch in range(EPOCHS):
        shares = [epoch_record(tmp_path, rank, epoch) for rank in range(2)]
        assert int(shares[0]["batches"]) == int(shares[1]["batches"])  # DDP needs equal batch counts
        assert len(shares[0]["indices"]) == len(shares[1]["indices"]) == -(-served_sets[epoch].size // 2)
        union = np.concatenate([s["indices"] for s in shares])
        assert set(union.tolist()) == set(served_sets[epoch].tolist())
        assert union.size - len(set(union.tolist())) == served_sets[epoch].size % 2  # the padding duplicate only
        for share in shares:
            np.testing.assert_array_equal(share["weights"], weight_rows[epoch][share["indices"]])
    for rank in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npz")["loss"], final, rtol=1e-6)


def test_resume_after_a_crash_serves_what_an_uninterrupted_run_serves(tmp_path, method, reference):
    served_sets, weight_rows, final = reference
    run(str(tmp_path), 1, crash_epoch=5, method=method)
    assert not (tmp_path / "rank0.npz").exists()
    run(str(tmp_path), 1, ckpt_path=str(tmp_path / "last.ckpt"), method=method)
    for epoch in range(EPOCHS):
        record = epoch_record(tmp_path, 0, epoch)
        assert sorted(record["indices"].tolist()) == served_sets[epoch].tolist()
        np.testing.assert_array_equal(record["weights"], weight_rows[epoch][record["indices"]])
    result = np.load(tmp_path / "rank0.npz")
    np.testing.assert_allclose(result["loss"], final, rtol=1e-6)
    assert [tuple(row) for row in result["served"]] == [(s.size, NUM_SAMPLES) for s in served_sets]


def test_no_host_synchronisation_in_the_batch_hook(tmp_path, monkeypatch, method):
    infobatch = PLANNERS[method]()
    calls = host_syncs_in_middle_batches(monkeypatch, infobatch)
    trainer = pl.Trainer(
        max_epochs=4, callbacks=[infobatch], logger=False, enable_progress_bar=False, enable_checkpointing=False
    )
    data = pl.LightningDataModule.from_datasets(train_dataset=make_dataset(), batch_size=BATCH_SIZE)
    trainer.fit(WeightedKnownLogits(epochs=4), datamodule=infobatch.wrap(data))
    assert infobatch.fraction_skipped > 0
    assert calls == []


class EpochLog(pl.Callback):
    def __init__(self) -> None:
        self.forwarded: list[int] = []
        self.validated: list[int] = []
        self.lr_after_epoch: list[float] = []
        self.weights: list[set[float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.forwarded.append(0)
        self.weights.append(set())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.forwarded[-1] += int(batch[0].shape[0])
        if len(batch) > 3:
            self.weights[-1] |= set(batch[3].tolist())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validated.append(trainer.current_epoch)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.lr_after_epoch.append(trainer.optimizers[0].param_groups[0]["lr"])


def digits_fit(*callbacks, datamodule, epochs=6, **classifier):
    model = lp.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), lr=0.1, **classifier)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


def test_a_real_fit_shortens_epochs_validates_each_and_anneals_the_lr_to_zero():
    dm = lp.DigitsDataModule(batch_size=64)
    infobatch, log = lp.InfoBatch(prune_ratio=0.5, delta=0.7), EpochLog()
    trainer = digits_fit(infobatch, log, datamodule=infobatch.wrap(dm), weighted_loss="mean")
    n = len(dm.train_dataset)
    assert trainer.reload_dataloaders_every_n_epochs == 1
    assert log.forwarded[0] == n and log.forwarded[-2:] == [n, n]  # no losses yet; annealed (floor(0.7 * 6) = 4)
    assert all(count < n for count in log.forwarded[1:4])
    assert log.forwarded == [infobatch.served[e][0] for e in range(6)]
    assert log.weights[2] == {1.0, 2.0} and log.weights[-1] == {1.0}
    assert log.validated == list(range(6))  # a shorter epoch still ends with validation
    # the cosine follows the fraction of training done: after epoch e it is at (e + 1) / 6 of the way
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * (e + 1) / 6)) for e in range(6)]
    np.testing.assert_allclose(log.lr_after_epoch, expected, atol=1e-12)
    assert infobatch.fraction_skipped == pytest.approx(1 - sum(log.forwarded) / (6 * n))


def test_over_a_static_selection_it_prunes_within_it_and_multiplies_its_weights():
    dm = lp.DigitsDataModule(batch_size=64)
    scores = lp.Scores(np.random.default_rng(0).random(len(dm.train_dataset)), "toy", labels=dm.targets)
    selection = lp.select(scores, 0.5, strategy="topk", weights="importance")
    pruned = lp.PrunedDataModule(dm, selection, weighted=True)
    infobatch = lp.InfoBatch(prune_ratio=0.5)
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((batch[2].numpy(), batch[3].numpy()))

    digits_fit(infobatch, Record(), datamodule=infobatch.wrap(pruned), epochs=3, weighted_loss="mean")
    indices = np.concatenate([i for i, _ in seen])
    weights = np.concatenate([w for _, w in seen])
    assert set(indices.tolist()) <= set(selection.indices.tolist())
    static = dict(zip(selection.indices.tolist(), selection.weights.tolist(), strict=True))
    ratios = weights / np.array([static[i] for i in indices.tolist()])
    np.testing.assert_allclose(np.unique(np.round(ratios, 5)), [1.0, 2.0])
    assert infobatch.served[1][1] == len(selection) and infobatch.served[1][0] < len(selection)


def test_dict_items_get_their_weight_under_weight():
    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return {"x": torch.zeros(2), "y": 0, "index": i}

    items = lp.dynamic.WeightedItems(Dicts(), carries_weight=False)
    assert float(items[(3, 2.0)]["weight"]) == 2.0 and items[(3, 2.0)]["index"] == 3


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: lp.InfoBatch(prune_ratio=0.95), r"prune_ratio=0.95 must lie in \(0, 0.9\]"),
        (lambda: lp.InfoBatch(delta=1.5), "delta=1.5 must lie in"),
        (lambda: lp.InfoBatch(num_epochs=0), "num_epochs=0"),
        (lambda: lp.InfoBatch(seed=-1), "seed=-1"),
    ],
)
def test_bad_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_classifier_that_normalises_weights_is_refused():
    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match="weighted_loss='mean'"):
        digits_fit(infobatch, datamodule=infobatch.wrap(lp.DigitsDataModule()), epochs=3)


def test_a_loader_infobatch_does_not_plan_is_refused():
    with pytest.raises(ValueError, match=r"infobatch.wrap\(datamodule\)"):
        digits_fit(lp.InfoBatch(), datamodule=lp.DigitsDataModule(), epochs=3, weighted_loss="mean")


def test_reloading_loaders_less_often_than_every_epoch_is_refused():
    infobatch = lp.InfoBatch()
    model = lp.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), weighted_loss="mean")
    trainer = pl.Trainer(max_epochs=3, callbacks=[infobatch], reload_dataloaders_every_n_epochs=2, logger=False)
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        trainer.fit(model, datamodule=infobatch.wrap(lp.DigitsDataModule()))


def test_a_fit_without_a_length_is_refused():
    infobatch = lp.InfoBatch()
    model = lp.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), weighted_loss="mean")
    trainer = pl.Trainer(max_epochs=-1, max_steps=5, callbacks=[infobatch], logger=False)
    with pytest.raises(ValueError, match="needs the length of training"):
        trainer.fit(model, datamodule=infobatch.wrap(lp.DigitsDataModule()))


@pytest.mark.slow
def test_worker_processes_receive_each_epochs_weights():
    # the weights travel with the indices the sampler yields, so worker processes (which hold copies of
    # the dataset made when the loader started) still see this epoch's plan
    dm = lp.DigitsDataModule(batch_size=128, num_workers=1)
    infobatch, log = lp.InfoBatch(prune_ratio=0.5), EpochLog()
    digits_fit(infobatch, log, datamodule=infobatch.wrap(dm), epochs=3, weighted_loss="mean")
    assert log.weights[1] == {1.0, 2.0} and log.forwarded[1] == infobatch.served[1][0] < len(dm.train_dataset)
