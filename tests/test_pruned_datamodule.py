"""PrunedDataModule: serves exactly the selection, reshuffled per epoch, on 1 and 2 DDP processes."""

import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from ddp_pruned_worker import run as run_worker
from torch.utils.data import DataLoader

from lightning_prune.data import DigitsDataModule, PrunedDataModule, SelectionSampler
from lightning_prune.models import Classifier, SmallCNN
from lightning_prune.selection import ScoreFileError, Scores, Selection, random_selection, select

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    return DigitsDataModule(batch_size=16)


def weighted_selection(dm: DigitsDataModule, ratio: float = 0.899) -> Selection:
    values = np.random.default_rng(0).random(len(dm.train_dataset))
    return select(Scores(values, "toy", labels=dm.targets), ratio, strategy="topk", weights="importance")


def epoch_indices(loader: DataLoader, epoch: int) -> np.ndarray:
    loader.sampler.set_epoch(epoch)
    return np.concatenate([batch[2].numpy() for batch in loader])


def test_train_loader_serves_exactly_the_selection_reshuffled_each_epoch(digits):
    selection = random_selection(len(digits.train_dataset), 0.7, seed=5, labels=digits.targets)
    pruned = PrunedDataModule(digits, selection, seed=11)
    loader = pruned.train_dataloader()
    original = digits.train_dataloader()
    assert loader.batch_size == original.batch_size == 16
    assert loader.dataset is digits.train_dataset and loader.collate_fn is original.collate_fn
    assert loader.num_workers == original.num_workers and loader.drop_last == original.drop_last
    orders = [epoch_indices(loader, epoch) for epoch in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == selection.indices.tolist()
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    again = PrunedDataModule(digits, selection, seed=11).train_dataloader()
    np.testing.assert_array_equal(epoch_indices(again, 1), orders[1])
    other_seed = PrunedDataModule(digits, selection, seed=12).train_dataloader()
    assert not np.array_equal(epoch_indices(other_seed, 1), orders[1])


def test_eval_loaders_and_attributes_are_the_wrapped_modules(digits, tmp_path):
    selection = random_selection(len(digits.train_dataset), 0.5, labels=digits.targets)
    pruned = PrunedDataModule(digits, str(selection.save(tmp_path / "sel.npz")))
    np.testing.assert_array_equal(pruned.selection.indices, selection.indices)
    assert pruned.val_dataloader().dataset is digits.val_dataset
    assert pruned.test_dataloader().dataset is digits.test_dataset
    assert pruned.num_classes == 10 and pruned.input_shape == (1, 8, 8)
    # A wrapped module without a validation split gets no validation loop here either.
    no_val = DigitsDataModule(val_fraction=0.0)
    from lightning.pytorch.utilities.model_helpers import is_overridden

    assert is_overridden("val_dataloader", pruned) and not is_overridden(
        "val_dataloader",
        PrunedDataModule(no_val, random_selection(len(no_val.train_dataset), 0.5, labels=no_val.targets)),
    )


def test_sampler_splits_each_epoch_across_ranks_with_documented_padding():
    indices = np.arange(100, 110)
    for epoch in range(2):
        shares = []
        for rank in range(3):
            sampler = SelectionSampler(indices, num_replicas=3, rank=rank, seed=1)
            sampler.set_epoch(epoch)
            shares.append(list(sampler))
            assert len(sampler) == len(shares[-1]) == 4
        served = sum(shares, [])
        assert set(served) == set(indices.tolist()) and len(served) == 12  # 2 padding duplicates
    assert isinstance(SelectionSampler(indices), torch.utils.data.DistributedSampler)


def test_weighted_batches_carry_the_selection_weights(digits):
    selection = weighted_selection(digits)
    loader = PrunedDataModule(digits, selection, weighted=True).train_dataloader()
    lookup = dict(zip(selection.indices.tolist(), selection.weights.tolist(), strict=True))
    batches = list(loader)
    assert all(len(batch) == 4 and batch[3].dtype == torch.float32 for batch in batches)
    for batch in batches:
        np.testing.assert_allclose(batch[3].numpy(), [lookup[i] for i in batch[2].tolist()])


def test_trainer_on_one_process_sees_exactly_the_selection(digits, tmp_path):
    selection = weighted_selection(digits)
    path = selection.save(tmp_path / "sel.npz")
    run_worker(str(tmp_path), str(path), devices=1, epochs=2, weighted=True)
    seen = [np.load(tmp_path / f"rank0_epoch{epoch}.npz") for epoch in range(2)]
    for record in seen:
        assert str(record["sampler"]) == "SelectionSampler"
        assert sorted(record["indices"].tolist()) == selection.indices.tolist()
    assert not np.array_equal(seen[0]["indices"], seen[1]["indices"])


@pytest.mark.slow
def test_two_ddp_processes_share_the_selection_disjointly(digits, tmp_path):
    selection = weighted_selection(digits)  # 109 samples: odd, so one padding duplicate per epoch
    assert len(selection) == 109
    path = selection.save(tmp_path / "sel.npz")
    epochs = 3
    result = subprocess.run(
        [sys.executable, os.path.join(TESTS, "ddp_pruned_worker.py"), str(tmp_path), str(path), "2", str(epochs), "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(TESTS),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lookup = dict(zip(selection.indices.tolist(), selection.weights.tolist(), strict=True))
    previous = None
    for epoch in range(epochs):
        ranks = [np.load(tmp_path / f"rank{rank}_epoch{epoch}.npz") for rank in range(2)]
        assert all(str(r["sampler"]) == "SelectionSampler" and int(r["world_size"]) == 2 for r in ranks)
        shares = [r["indices"].tolist() for r in ranks]
        assert len(shares[0]) == len(shares[1]) == 55
        assert set(shares[0]) | set(shares[1]) == set(selection.indices.tolist())  # nothing lost or outside
        assert len(set(shares[0]) & set(shares[1])) <= 1  # disjoint but for the one padding sample
        assert len(shares[0]) + len(shares[1]) - len(set(shares[0] + shares[1])) == 1
        for r in ranks:
            np.testing.assert_allclose(r["weights"], [lookup[i] for i in r["indices"].tolist()])
        if previous is not None:
            assert shares[0] != previous[0] and set(shares[0]) != set(previous[0])  # reshuffled across ranks too
        previous = shares


def test_selection_for_another_dataset_is_refused(digits):
    n = len(digits.train_dataset)
    with pytest.raises(ScoreFileError, match=rf"made for a data set of {n + 1} samples, but this data set has {n}"):
        PrunedDataModule(digits, random_selection(n + 1, 0.5)).train_dataloader()
    shuffled = np.random.default_rng(0).permutation(digits.targets)
    with pytest.raises(ScoreFileError, match="other labels"):
        PrunedDataModule(digits, random_selection(n, 0.5, labels=shuffled)).train_dataloader()


def test_bad_arguments_are_refused_clearly(digits, tmp_path):
    unweighted = random_selection(len(digits.train_dataset), 0.5)
    with pytest.raises(ValueError, match="has no weights.*weights='importance'"):
        PrunedDataModule(digits, unweighted, weighted=True)
    with pytest.raises(TypeError, match="wraps a LightningDataModule"):
        PrunedDataModule(digits.train_dataloader(), unweighted)
    with pytest.raises(ScoreFileError, match="no such file"):
        PrunedDataModule(digits, str(tmp_path / "missing.npz"))

    class TwoLoaders(pl.LightningDataModule):
        def train_dataloader(self):
            return {"a": digits.train_dataloader(), "b": digits.train_dataloader()}

    with pytest.raises(TypeError, match="to return one torch DataLoader"):
        PrunedDataModule(TwoLoaders(), unweighted).train_dataloader()


def test_no_epoch_ends_in_a_one_sample_batch_which_batchnorm_refuses(digits):
    # a coreset of 16 k + 1 samples (per rank) would end every epoch in a batch of one
    for size, replicas in [(16 * 20 + 1, 1), (2 * (16 * 10 + 1), 2), (2 * (16 * 10 + 1) - 1, 2)]:
        indices = np.arange(0, 2 * size, 2)
        served: list[int] = []
        for rank in range(replicas):
            sampler = SelectionSampler(indices, replicas, rank, seed=1, batch_size=16, pad_single_sample_batch=True)
            sizes = [len(batch) for batch in torch.utils.data.BatchSampler(sampler, 16, drop_last=False)]
            assert sizes[-1] == 2 and sum(sizes) == len(sampler) == -(-size // replicas) + 1
            served += list(sampler)
        assert set(served) == set(indices.tolist())
    # drop_last, or a model without BatchNorm, leaves the layout alone
    assert len(SelectionSampler(np.arange(33), batch_size=16, drop_last=True, pad_single_sample_batch=True)) == 33
    assert len(SelectionSampler(np.arange(33), batch_size=16)) == 33

    class Sizes(pl.Callback):
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.sizes.append(len(batch[2]))

    keep, sizes = 16 * 20 + 1, Sizes()
    module = PrunedDataModule(digits, Selection(np.arange(keep), len(digits.train_dataset), method="toy"))
    trainer = pl.Trainer(
        max_epochs=1, callbacks=[sizes], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(Classifier(SmallCNN(width=4)), datamodule=module)  # SmallCNN has BatchNorm layers
    assert sizes.sizes == [16] * 20 + [2]
