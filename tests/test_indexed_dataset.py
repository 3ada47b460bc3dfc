"""IndexedDataset and batch unpacking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

import lightning_prune as lp


class _Images(Dataset):
    def __init__(self) -> None:
        self.targets = [3, 1, 2]

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i):
        return Image.fromarray(np.full((4, 4, 3), i * 10, dtype=np.uint8)), self.targets[i]


def test_items_gain_their_index_with_pil_images_and_torchvision_transforms():
    transform = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    dataset = lp.IndexedDataset(_Images(), transform=transform, target_transform=lambda y: y + 100)
    x, y, i = dataset[2]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 4, 4)
    assert torch.allclose(x, torch.full_like(x, 20 / 255))
    assert (y, i) == (102, 2)
    np.testing.assert_array_equal(dataset.targets, [3, 1, 2])
    x, y, index = next(iter(DataLoader(dataset, batch_size=3)))
    assert index.tolist() == [0, 1, 2]


class _Dicts(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i):
        return {"image": torch.full((2,), float(i)), "label": i % 2}


def test_dict_items_and_dict_batches():
    dataset = lp.IndexedDataset(_Dicts(), transform=lambda x: x * 2)
    item = dataset[3]
    assert item["index"] == 3 and item["image"].tolist() == [6.0, 6.0]
    np.testing.assert_array_equal(lp.dataset_targets(dataset), [0, 1, 0, 1])
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    inputs, targets, indices = lp.unpack_batch(batch)
    assert inputs.shape == (4, 2) and targets.tolist() == [0, 1, 0, 1] and indices.tolist() == [0, 1, 2, 3]


def test_unpack_batch_errors():
    with pytest.raises(ValueError, match="IndexedDataset"):
        lp.unpack_batch((torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(ValueError, match="IndexedDataset"):
        lp.unpack_batch({"image": torch.zeros(2), "label": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(TypeError, match="one-hot"):
        lp.unpack_batch((torch.zeros(2, 1), torch.zeros(2, 3), torch.arange(2)))


def test_wrapping_twice_and_non_tuple_items_are_refused():
    dataset = lp.IndexedDataset(TensorDataset(torch.zeros(2, 1), torch.zeros(2)))
    with pytest.raises(TypeError, match="already"):
        lp.IndexedDataset(dataset)

    class Scalars(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return 5

    with pytest.raises(TypeError, match=r"\(input, target\)"):
        lp.IndexedDataset(Scalars())[0]
