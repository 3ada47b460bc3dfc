"""Giving every training sample its index: the one change a user makes to their data.

Collectors key all per-sample state by the sample's index in the full training set, so a batch
must carry the indices. :class:`IndexedDataset` wraps any map-style dataset so that item ``i``
becomes ``(x, y, i)``; :func:`unpack_batch` reads targets and indices back from a collated batch,
tuple or dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any, Literal, overload

import numpy as np
import torch
from torch.utils.data import Dataset

INDEX_KEYS = ("index", "indices", "idx", "sample_index")
TARGET_KEYS = ("target", "targets", "label", "labels", "y")
INPUT_KEYS = ("input", "inputs", "image", "images", "x")


class IndexedDataset(Dataset):
    """Wrap a map-style dataset so items become ``(x, y, index)``.

    ``x`` may be anything the wrapped dataset returns (tensor, PIL image, dict, ...); ``transform``
    and ``target_transform`` (e.g. torchvision transforms) are applied to ``x`` and ``y``. A
    dataset whose items are dicts keeps returning dicts, with the index added under ``"index"``.

    Example::

        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from lightning_prune import IndexedDataset
        >>> base = TensorDataset(torch.arange(16.0).view(8, 2), torch.arange(8) % 2)  # e.g. torchvision's CIFAR10
        >>> train_set = IndexedDataset(base, transform=lambda x: 2 * x)
        >>> x, y, i = train_set[5]
        >>> x.tolist(), int(y), i
        ([20.0, 22.0], 1, 5)
        >>> rows = [{"image": torch.zeros(2), "label": k % 2} for k in range(4)]  # dict rows, e.g. a datasets.Dataset
        >>> IndexedDataset(rows, transform=lambda x: x + 1)[3]
        {'image': tensor([1., 1.]), 'label': 1, 'index': 3}
    """

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if isinstance(dataset, IndexedDataset):
            raise TypeError("This dataset is already an IndexedDataset; wrap the underlying dataset once.")
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                f"IndexedDataset needs a map-style dataset (with __getitem__ and __len__), got "
                f"{type(dataset).__name__}. Convert an iterable dataset to a map-style one first."
            )
        self.dataset = dataset
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return indexed_item(self.dataset[index], index, self.transform, self.target_transform)

    @property
    def targets(self) -> np.ndarray:
        """The labels in index order (read from the wrapped dataset; computed once)."""
        if not hasattr(self, "_targets"):
            self._targets = dataset_targets(self.dataset)
        return self._targets


def indexed_item(
    item: Any,
    index: int,
    transform: Callable[[Any], Any] | None = None,
    target_transform: Callable[[Any], Any] | None = None,
    source: str = "IndexedDataset",
) -> Any:
    """``item`` (``(x, y)`` or a dict row) with its sample index: ``(x, y, index)``, or the dict with ``"index"``.

    ``transform`` and ``target_transform`` apply to the input and the target (in a dict, the first
    of the input and target keys it has). ``source`` names the dataset in the error for other items.
    """
    if isinstance(item, Mapping):
        item = dict(item)
        if transform is not None:
            key = _first_key(item, INPUT_KEYS, "input")
            item[key] = transform(item[key])
        if target_transform is not None:
            key = _first_key(item, TARGET_KEYS, "target")
            item[key] = target_transform(item[key])
        item["index"] = index
        return item
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(
            f"{source} expects the wrapped dataset to return (x, y) or a dict, got "
            f"{type(item).__name__}. Return (input, target) from __getitem__."
        )
    x, y = item[0], item[1]
    if transform is not None:
        x = transform(x)
    if target_transform is not None:
        y = target_transform(y)
    return x, y, index


def _first_key(item: Mapping[str, Any], candidates: Sequence[str], what: str) -> str:
    for key in candidates:
        if key in item:
            return key
    raise KeyError(f"dict sample has no {what} key; expected one of {list(candidates)}, got {list(item)}.")


def dataset_targets(dataset: Dataset) -> np.ndarray:
    """Labels of a map-style dataset in index order, as int64.

    Uses a ``targets`` / ``labels`` attribute when there is one (torchvision datasets, our
    datamodules, ``Subset`` of either), and otherwise reads every item once.
    """
    for attribute in ("targets", "labels"):
        values = getattr(dataset, attribute, None)
        if values is not None and not callable(values):
            return np.asarray(values, dtype=np.int64).reshape(-1)
    if isinstance(dataset, torch.utils.data.Subset):
        return dataset_targets(dataset.dataset)[np.asarray(dataset.indices)]
    inner = getattr(dataset, "dataset", None)
    if isinstance(dataset, IndexedDataset) and inner is not None:
        return dataset_targets(inner)
    labels = []
    for i in range(dataset_length(dataset, "to read its labels")):
        item = dataset[i]
        label = item[_first_key(item, TARGET_KEYS, "target")] if isinstance(item, Mapping) else item[1]
        labels.append(int(label))
    return np.asarray(labels, dtype=np.int64)


def dataset_length(dataset: Dataset, purpose: str) -> int:
    """``len(dataset)``, or a ``TypeError`` naming ``purpose`` when the dataset has no ``__len__``."""
    if not isinstance(dataset, Sized):
        raise TypeError(
            f"{type(dataset).__name__} has no __len__, which is needed {purpose}. Use a map-style dataset "
            "(with __getitem__ and __len__)."
        )
    return len(dataset)


# The overloads give callers the precise types: what is required (the default) is never None.
@overload
def split_batch(
    batch: Any, *, need_indices: Literal[True] = ..., need_targets: Literal[True] = ..., class_targets: bool = ...
) -> tuple[Any, torch.Tensor, torch.Tensor]: ...


@overload
def split_batch(
    batch: Any, *, need_indices: bool, need_targets: Literal[True] = ..., class_targets: bool = ...
) -> tuple[Any, torch.Tensor, torch.Tensor | None]: ...


@overload
def split_batch(
    batch: Any, *, need_indices: Literal[True] = ..., need_targets: bool, class_targets: bool = ...
) -> tuple[Any, torch.Tensor | None, torch.Tensor]: ...


@overload
def split_batch(
    batch: Any, *, need_indices: bool, need_targets: bool, class_targets: bool = ...
) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]: ...


def split_batch(
    batch: Any, *, need_indices: bool = True, need_targets: bool = True, class_targets: bool = True
) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
    """Split a collated batch into ``(inputs, targets, indices)``; the one batch reader of the library.

    Accepts ``(x, y[, index, ...])`` tuples (what :class:`IndexedDataset` produces) and dict batches
    with an input key (one of ``input``, ``inputs``, ``image``, ``images``, ``x``; the whole dict is
    the input without one), a target key and an index key (``index``, ``indices``, ``idx`` or
    ``sample_index``); a bare tensor is inputs alone.

    Args:
        need_indices: raise when the batch carries no indices (else ``indices`` is ``None``).
        need_targets: raise when the batch carries no targets (else ``targets`` is ``None``).
        class_targets: targets must be integer class indices (regression targets need ``False``).
    """
    inputs: Any
    targets: Any = None
    indices: Any = None
    if isinstance(batch, Mapping):
        input_key = next((k for k in INPUT_KEYS if k in batch), None)
        target_key = next((k for k in TARGET_KEYS if k in batch), None)
        index_key = next((k for k in INDEX_KEYS if k in batch), None)
        inputs = batch[input_key] if input_key is not None else batch
        targets = batch[target_key] if target_key is not None else None
        indices = batch[index_key] if index_key is not None else None
        if need_indices and indices is None:
            raise ValueError(_NO_INDEX_MESSAGE + f" This dict batch has keys {sorted(batch)}.")
        if need_targets and targets is None:
            raise ValueError(f"dict batch has no target key (one of {list(TARGET_KEYS)}); got keys {sorted(batch)}.")
    elif isinstance(batch, (tuple, list)) and len(batch) >= 1:
        inputs = batch[0]
        targets = batch[1] if len(batch) >= 2 else None
        indices = batch[2] if len(batch) >= 3 else None
        if need_indices and indices is None:
            raise ValueError(_NO_INDEX_MESSAGE + f" This batch has {len(batch)} elements, (x, y) without an index.")
        if need_targets and targets is None:
            raise ValueError("This batch has 1 element; expected (x, y, ...) with targets.")
    elif isinstance(batch, torch.Tensor) and not (need_indices or need_targets):
        inputs = batch
    else:
        expected = (
            "(x, y, index) or a dict with input, target and index keys" if need_indices else "(x, y, ...) or a dict"
        )
        raise ValueError(
            (_NO_INDEX_MESSAGE + " " if need_indices else "") + f"Expected {expected}; got a batch of "
            f"type {type(batch).__name__}."
        )
    if targets is not None and class_targets:
        targets = _as_index_tensor(targets, "targets")
    if indices is not None:
        indices = _as_index_tensor(indices, "indices")
    return inputs, targets, indices


def unpack_batch(batch: Any) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Split a training batch into ``(inputs, targets, indices)``, all required (see :func:`split_batch`).

    Accepts the ``(x, y, index)`` tuples that :class:`IndexedDataset` produces and dict batches with
    an index key (one of ``index``, ``indices``, ``idx``, ``sample_index``) and a target key.
    """
    return split_batch(batch)


WEIGHT_KEY = "weight"


def carried_weights(batch: Any) -> torch.Tensor | None:
    """The per-sample weights a batch carries (``(x, y, index, weight)`` or a dict's ``"weight"``), or ``None``."""
    if isinstance(batch, Mapping):
        weights = batch.get(WEIGHT_KEY)
    elif isinstance(batch, (tuple, list)) and len(batch) >= 4:
        weights = batch[3]
    else:
        return None
    return weights if isinstance(weights, torch.Tensor) or weights is None else torch.as_tensor(weights)


def batch_weights(batch: Any) -> torch.Tensor:
    """The per-sample loss weights of a training batch, ``[B]``: ones when it carries none.

    Batches are ``(x, y, index)`` for the collectors and ``(x, y, index, weight)`` (dicts: a
    ``"weight"`` entry) under :class:`~lightning_prune.InfoBatch` or a weighted
    :class:`~lightning_prune.PrunedDataModule`, so one ``training_step`` serves all of them::

        from lightning_prune.data.indexed import batch_weights

        def training_step(self, batch, batch_idx):
            x, y, _ = lp.unpack_batch(batch)
            logits = self(x)
            per_sample = F.cross_entropy(logits, y, reduction="none")
            loss = (batch_weights(batch) * per_sample).mean()
            return {"loss": loss, "logits": logits}

    The weights keep their autograd connection (InfoBatch checks once per fit that the loss scales
    with them), so compute the loss from them as above, without ``.detach()``.
    """
    # any target (class labels, regression values, masks, token ids): the samples are counted by the
    # indices when the batch has them, else by the targets' first dimension
    _, targets, indices = split_batch(batch, need_indices=False, class_targets=False)
    counted = indices if indices is not None else torch.as_tensor(targets)
    samples = int(counted.shape[0])
    weights = carried_weights(batch)
    if weights is None:
        return torch.ones(samples, dtype=torch.float32, device=counted.device)
    weights = weights.reshape(-1)
    if weights.shape[0] != samples:
        raise ValueError(
            f"The batch carries {weights.shape[0]} weights for {samples} samples; the weight is one float "
            "per sample, the fourth element of (x, y, index, weight) or a dict's 'weight' entry."
        )
    return weights if weights.is_floating_point() else weights.float()


_NO_INDEX_MESSAGE = (
    "The batch carries no sample indices, which per-sample scoring needs. Wrap your training dataset "
    "with lightning_prune.IndexedDataset so that items become (x, y, index), or pass an adapter to the "
    "collector that returns the indices."
)


def _as_index_tensor(value: Any, what: str) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(
            f"batch {what} must be integers, got dtype {tensor.dtype}. "
            + ("Use class indices, not one-hot or soft labels." if what == "targets" else "")
        )
    return tensor.reshape(-1)
