"""RS2 (dynamic random pruning without replacement): the stream of subsets, a real fit on 1 and 2
processes, a crash and resume, a static selection underneath, and bad settings."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
from collector_harness import BATCH_SIZE, EPOCHS, NUM_SAMPLES, make_dataset
from ddp_rs2_worker import PRUNE_RATIO, SEED, run

import lightning_prune as lp
from lightning_prune.dynamic import rs2_positions

TESTS = os.path.dirname(os.path.abspath(__file__))
NUM_KEEP = NUM_SAMPLES - round(PRUNE_RATIO * NUM_SAMPLES)


@pytest.mark.parametrize(("pool_size", "num_keep"), [(37, 15), (37, 37), (40, 10), (10, 7), (5, 1), (50, 49)])
def test_every_sample_is_served_once_before_any_is_served_twice(pool_size, num_keep):
    counts = np.zeros(pool_size, dtype=np.int64)
    for epoch in range(3 * pool_size // num_keep + 3):
        positions = rs2_positions(pool_size, num_keep, seed=1, epoch=epoch)
        assert positions.size == num_keep
        assert np.unique(positions).size == num_keep, f"epoch {epoch} serves a sample twice"
        counts[positions] += 1
        assert counts.max() - counts.min() <= 1, f"after epoch {epoch} counts range {counts.min()}..{counts.max()}"


def test_the_stream_is_a_function_of_seed_and_epoch():
    first = [rs2_positions(37, 15, seed=2, epoch=e) for e in range(6)]
    again = [rs2_positions(37, 15, seed=2, epoch=e) for e in reversed(range(6))][::-1]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = [rs2_positions(37, 15, seed=3, epoch=e) for e in range(6)]
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_subsets_are_uniform_over_the_pool():
    """Over many seeds each sample is in the first epoch's subset with probability num_keep / pool."""
    hits = np.zeros(20)
    for seed in range(2000):
        hits[rs2_positions(20, 5, seed=seed, epoch=0)] += 1
    np.testing.assert_allclose(hits / 2000, 0.25, atol=0.04)


def test_plan_maps_positions_onto_the_pool_with_unit_weights():
    rs2 = lp.RS2(prune_ratio=0.5, seed=4)
    pool = np.array([3, 8, 11, 20, 21, 30, 31, 40])
    plan = rs2.plan(pool, epoch=2)
    assert plan.pool_size == 8 and plan.indices.size == 4 and plan.skipped == 4
    np.testing.assert_array_equal(plan.indices, np.sort(pool[rs2_positions(8, 4, 4, 2)]))
    np.testing.assert_array_equal(plan.weights, np.ones(4, dtype=np.float32))


def records(path, rank: int, epoch: int):
    return np.load(path / f"rank{rank}_epoch{epoch}.npz")


def expected_epoch(epoch: int) -> list[int]:
    return sorted(rs2_positions(NUM_SAMPLES, NUM_KEEP, SEED, epoch).tolist())


def test_a_fit_serves_the_planned_subsets_in_equal_length_epochs(tmp_path):
    rs2 = run(str(tmp_path), 1)
    for epoch in range(EPOCHS):
        record = records(tmp_path, 0, epoch)
        assert sorted(record["indices"].tolist()) == expected_epoch(epoch)
        np.testing.assert_array_equal(record["weights"], np.ones(NUM_KEEP, dtype=np.float32))
        assert int(record["batches"]) == -(-NUM_KEEP // BATCH_SIZE) == int(record["num_training_batches"])
    assert rs2.served == {e: (NUM_KEEP, NUM_SAMPLES) for e in range(EPOCHS)}
    assert rs2.fraction_skipped == pytest.approx(1 - NUM_KEEP / NUM_SAMPLES)


@pytest.mark.slow
def test_two_ddp_processes_serve_the_same_plan_in_equal_shares(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(TESTS, "ddp_rs2_worker.py"), str(tmp_path), "2"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.path.dirname(TESTS)])},  # this checkout
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(TESTS),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for epoch in range(EPOCHS):
        shares = [records(tmp_path, rank, epoch) for rank in range(2)]
        assert int(shares[0]["batches"]) == int(shares[1]["batches"])
        union = np.concatenate([share["indices"] for share in shares])
        assert sorted(set(union.tolist())) == expected_epoch(epoch)
        assert union.size - len(set(union.tolist())) == NUM_KEEP % 2  # the padding duplicate only
    for rank in range(2):
        assert float(np.load(tmp_path / f"rank{rank}.npz")["fraction_skipped"]) == pytest.approx(
            1 - NUM_KEEP / NUM_SAMPLES
        )


def test_resume_after_a_crash_serves_what_an_uninterrupted_run_serves(tmp_path):
    run(str(tmp_path), 1, crash_epoch=5)
    assert not (tmp_path / "rank0.npz").exists()
    run(str(tmp_path), 1, ckpt_path=str(tmp_path / "last.ckpt"))
    for epoch in range(EPOCHS):
        assert sorted(records(tmp_path, 0, epoch)["indices"].tolist()) == expected_epoch(epoch)
    np.testing.assert_array_equal(np.load(tmp_path / "rank0.npz")["served"], [(NUM_KEEP, NUM_SAMPLES)] * EPOCHS)


def test_over_a_static_selection_each_epoch_draws_from_the_selection(tmp_path):
    selection = lp.random_selection(NUM_SAMPLES, 0.3, seed=1)
    rs2 = lp.RS2(prune_ratio=0.5, seed=0)
    data = pl.LightningDataModule.from_datasets(train_dataset=make_dataset(), batch_size=BATCH_SIZE)
    wrapped = rs2.wrap(lp.PrunedDataModule(data, selection, seed=0))
    with pytest.raises(ValueError, match=r"made by rs2\.wrap\(datamodule\), but no Trainer"):
        wrapped.train_dataloader()
    wrapped.trainer = pl.Trainer(callbacks=[rs2], logger=False, enable_checkpointing=False)
    loader = wrapped.train_dataloader()
    served = [index for index, _ in loader.sampler]
    keep = selection.indices.size - round(0.5 * selection.indices.size)
    assert len(served) == keep and set(served) <= set(selection.indices.tolist())


def test_fit_without_wrap_is_refused_with_the_fix(tmp_path):
    from ddp_infobatch_worker import WeightedKnownLogits

    rs2 = lp.RS2(prune_ratio=0.5)
    trainer = pl.Trainer(
        max_epochs=1, callbacks=[rs2], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    data = pl.LightningDataModule.from_datasets(train_dataset=make_dataset(), batch_size=BATCH_SIZE)
    with pytest.raises(ValueError, match=r"rs2\.wrap\(datamodule\)"):
        trainer.fit(WeightedKnownLogits(), datamodule=data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prune_ratio": 0.0}, "outside"),
        ({"prune_ratio": 1.0}, "outside"),
        ({"prune_ratio": "half"}, "must be a number"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"seed": None}, "seed"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        lp.RS2(**kwargs)


def test_a_callback_that_plans_nothing_is_refused_by_the_data_module():
    data = pl.LightningDataModule.from_datasets(train_dataset=make_dataset(), batch_size=BATCH_SIZE)
    with pytest.raises(TypeError, match="dynamic pruning callback"):
        lp.DynamicDataModule(data, object())  # type: ignore[arg-type]
