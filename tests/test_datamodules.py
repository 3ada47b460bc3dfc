"""Built-in data modules: digits splits and items; CIFAR read from files in the real on-disk format."""

import numpy as np
import pytest
import torch
from fake_cifar import write_cifar10, write_cifar100

from lightning_prune.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    IndexedDataset,
    TabularDataModule,
    dataset_targets,
)


def test_digits_splits_are_disjoint_stratified_and_fixed_by_seed():
    dm = DigitsDataModule(val_fraction=0.15, test_fraction=0.25, split_seed=0)
    split = dm.split_indices
    sizes = {name: len(idx) for name, idx in split.items()}
    assert sizes == {"train": 1078, "val": 270, "test": 449}
    everything = np.concatenate(list(split.values()))
    assert np.unique(everything).size == everything.size == 1797
    assert len(dm.train_dataset) == 1078 and len(dm.val_dataset) == 270 and len(dm.test_dataset) == 449
    # Stratified: every class has (nearly) the same share in every split.
    for dataset in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        shares = np.bincount(dataset_targets(dataset), minlength=10) / len(dataset)
        assert np.all(np.abs(shares - 0.1) < 0.02)
    same = DigitsDataModule(split_seed=0)
    np.testing.assert_array_equal(same.split_indices["train"], split["train"])
    other = DigitsDataModule(split_seed=1)
    assert not np.array_equal(other.split_indices["train"], split["train"])


def test_digits_items_shapes_and_normalisation():
    dm = DigitsDataModule(batch_size=32)
    assert isinstance(dm.train_dataset, IndexedDataset)
    assert dm.num_classes == 10 and dm.input_shape == (1, 8, 8)
    x, y, index = dm.train_dataset[7]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and index == 7 and y == dm.targets[7]
    inputs = dm.train_dataset.dataset.inputs
    assert abs(float(inputs.mean())) < 1e-5 and abs(float(inputs.std()) - 1) < 1e-5
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 3 and batch[0].shape == (32, 1, 8, 8) and batch[1].dtype == torch.int64
    xv, yv = next(iter(dm.val_dataloader()))
    assert xv.shape[1:] == (1, 8, 8) and yv.shape == (32,)
    with pytest.raises(ValueError, match="leaving samples to train on"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)


@pytest.fixture
def tiny_cifar10(tmp_path, monkeypatch):
    """A 20-image training set (5 batches of 4) and an 8-image test set in CIFAR-10's real format."""
    train_data, train_labels, test_data = write_cifar10(tmp_path, monkeypatch)
    return tmp_path, train_data, train_labels, test_data


def test_cifar10_loads_the_real_format_with_paper_transforms(tiny_cifar10):
    root, train_data, train_labels, test_data = tiny_cifar10
    dm = CIFAR10DataModule(root=str(root), batch_size=8, num_workers=0, augment=False)
    dm.setup("fit")
    assert len(dm.train_dataset) == 20 and len(dm.test_dataset) == 8
    np.testing.assert_array_equal(dm.targets, train_labels)
    x, y, index = dm.train_dataset[6]
    assert x.shape == (3, 32, 32) and y == train_labels[6] and index == 6
    expected = torch.as_tensor(train_data[6].reshape(3, 32, 32), dtype=torch.float32) / 255
    mean, std = torch.tensor(dm.mean).view(3, 1, 1), torch.tensor(dm.std).view(3, 1, 1)
    torch.testing.assert_close(x, (expected - mean) / std)
    xt, yt = dm.test_dataset[3]
    torch.testing.assert_close(
        xt, (torch.as_tensor(test_data[3].reshape(3, 32, 32), dtype=torch.float32) / 255 - mean) / std
    )
    assert yt == 3
    names = [type(t).__name__ for t in CIFAR10DataModule(root=str(root)).train_transform.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    augmented = CIFAR10DataModule(root=str(root), batch_size=8, num_workers=0)
    batch = next(iter(augmented.train_dataloader()))
    assert batch[0].shape == (8, 3, 32, 32) and len(batch) == 3
    from lightning.pytorch.utilities.model_helpers import is_overridden

    assert not is_overridden("val_dataloader", augmented)  # no validation split by default


def test_cifar10_validation_split_is_held_out_of_training(tiny_cifar10):
    root, _, train_labels, _ = tiny_cifar10
    dm = CIFAR10DataModule(root=str(root), num_workers=0, val_size=10, batch_size=4)
    dm.setup("fit")
    assert len(dm.train_dataset) == 10 and len(dm.val_dataset) == 10
    assert np.bincount(dm.val_dataset.targets, minlength=10).tolist() == [1] * 10
    train_positions = dm.train_dataset.dataset.indices
    assert not set(train_positions.tolist()) & set(dm.val_dataset.indices.tolist())
    np.testing.assert_array_equal(dm.targets, train_labels[train_positions])
    assert len(list(dm.val_dataloader())) == 3


def test_cifar_missing_or_altered_files_fail_naming_root_and_flag(tmp_path, tiny_cifar10):
    with pytest.raises(FileNotFoundError, match=r"missing or corrupted in .*cifar-10-batches-py.*download=True"):
        CIFAR10DataModule(root=str(tmp_path / "nowhere")).setup("fit")
    root = tiny_cifar10[0]
    with open(root / "cifar-10-batches-py" / "data_batch_3", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(FileNotFoundError, match="download=True"):
        CIFAR10DataModule(root=str(root)).setup("fit")


def test_cifar100_reads_fine_labels(tmp_path, monkeypatch):
    fine = write_cifar100(tmp_path, monkeypatch)
    dm = CIFAR100DataModule(root=str(tmp_path), num_workers=0)
    assert dm.num_classes == 100 and dm.mean != CIFAR10DataModule.mean
    np.testing.assert_array_equal(dm.targets, fine)
    assert len(dm.test_dataset) == 5
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        CIFAR100DataModule(root=str(tmp_path / "empty")).setup("fit")


# The two in-memory data modules split through one check: the same bad fractions fail with the same message.
SPLIT_MAKERS = {
    "digits": lambda **kw: DigitsDataModule(**kw),
    "tabular": lambda **kw: TabularDataModule(num_samples=400, **kw),
}
BAD_SPLITS = [
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "leaving samples to train on"),
    ({"val_fraction": -0.1}, "leaving samples to train on"),
    ({"test_fraction": 0.0}, "leaving samples to train on"),
    ({"val_fraction": float("nan")}, "must be finite numbers"),
    ({"test_fraction": "0.2"}, "must be finite numbers"),
    ({"test_fraction": 0.001}, "at least one sample of each class"),
    ({"val_fraction": 0.001}, "at least one sample of each class"),
    ({"val_fraction": 0.5, "test_fraction": 0.495}, "at least one sample of each class"),
]


@pytest.mark.parametrize("maker", sorted(SPLIT_MAKERS))
@pytest.mark.parametrize(("kwargs", "message"), BAD_SPLITS)
def test_digits_and_tabular_refuse_the_same_bad_splits_alike(maker, kwargs, message):
    with pytest.raises(ValueError, match=message) as caught:
        SPLIT_MAKERS[maker](**kwargs)
    assert "val_fraction" in str(caught.value) and "test_fraction" in str(caught.value)


@pytest.mark.parametrize("maker", sorted(SPLIT_MAKERS))
def test_digits_and_tabular_both_allow_no_validation_split(maker):
    dm = SPLIT_MAKERS[maker](val_fraction=0.0)
    assert len(dm.val_dataset) == 0 and len(dm.split_indices["val"]) == 0
    assert len(dm.train_dataset) + len(dm.test_dataset) == len(np.concatenate(list(dm.split_indices.values())))
    from lightning.pytorch.utilities.model_helpers import is_overridden

    assert not is_overridden("val_dataloader", dm)
