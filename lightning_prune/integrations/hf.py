"""Hugging Face ``datasets``: score, select and train on a ``datasets.Dataset`` (extra ``[hf]``).

A ``datasets.Dataset`` is map-style and its rows are dicts, so the collectors and
:class:`~lightning_prune.PrunedDataModule` read it once every row carries its sample index:
:class:`HFIndexedDataset` adds ``"index"`` to each row. The sample index is the row number, or the
value of an index column (``index_column="uid"``) for a data set whose rows were shuffled, sorted or
filtered since it was scored: the column's values must then be the numbers ``0 .. N-1``, each once.
:func:`pruned_hf_dataset` turns a :class:`~lightning_prune.Selection` back into the pruned
``datasets.Dataset`` (``Dataset.select``), to train on, save or push anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lightning_prune.data.indexed import INDEX_KEYS, TARGET_KEYS, indexed_item
from lightning_prune.integrations._optional import import_optional
from lightning_prune.selection.selection import Selection


def _check_hf_dataset(dataset: Any, purpose: str) -> None:
    datasets = import_optional("datasets", purpose)
    if isinstance(dataset, datasets.IterableDataset):
        raise TypeError(
            f"{purpose} needs a map-style datasets.Dataset, got a streaming datasets.IterableDataset (rows have no "
            "stable position to score). Load it without streaming=True, or convert it with "
            "datasets.Dataset.from_generator(...)."
        )
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"{purpose} needs a datasets.Dataset, got {type(dataset).__name__}. For a DatasetDict pick the split, "
            "e.g. dataset['train']."
        )


def _label_column(dataset: Any, label_column: str | None) -> str | None:
    """The column the batches' targets come from: ``label_column``, else the first target key the data set has."""
    names = list(dataset.column_names)
    if label_column is not None:
        if label_column not in names:
            raise ValueError(f"label_column={label_column!r} is not a column of this dataset; its columns are {names}.")
        if label_column not in TARGET_KEYS:
            raise ValueError(
                f"label_column={label_column!r}: batches read their targets from a column named one of "
                f"{list(TARGET_KEYS)}. Rename it first: dataset.rename_column({label_column!r}, 'label')."
            )
        return label_column
    return next((name for name in TARGET_KEYS if name in names), None)


def _rows_by_index(dataset: Any, index_column: str | None) -> np.ndarray | None:
    """``rows[i]``: the row holding sample ``i`` (``None``: sample ``i`` is row ``i``)."""
    if index_column is None:
        return None
    names = list(dataset.column_names)
    if index_column not in names:
        raise ValueError(f"index_column={index_column!r} is not a column of this dataset; its columns are {names}.")
    values = np.asarray(dataset[index_column])
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise TypeError(
            f"index_column={index_column!r} must hold one integer per row (the sample index), got values of dtype "
            f"{values.dtype} and shape {values.shape}."
        )
    size = values.size
    rows = np.full(size, -1, dtype=np.int64)
    inside = (values >= 0) & (values < size)
    if not inside.all():
        raise ValueError(
            f"index_column={index_column!r} holds {int((~inside).sum())} values outside [0, {size}); the sample "
            f"indices of a {size}-row dataset are 0 .. {size - 1}. Number the rows once, before shuffling: "
            f"dataset.add_column({index_column!r}, range(len(dataset)))."
        )
    rows[values] = np.arange(size)
    if (rows < 0).any():
        raise ValueError(
            f"index_column={index_column!r} repeats {int((rows < 0).sum())} sample indices; each of 0 .. {size - 1} "
            "must occur once. Number the rows once: dataset.add_column(name, range(len(dataset)))."
        )
    return rows


class HFIndexedDataset(Dataset):
    """A ``datasets.Dataset`` as a training set whose rows carry their sample index under ``"index"``.

    Args:
        dataset: a map-style ``datasets.Dataset`` (set its format first, e.g. ``.with_format("torch")``,
            or convert in ``transform``, so that the default collate stacks the columns).
        index_column: the column holding each row's sample index (``0 .. N-1``, each once); ``None``
            (default): the row number is the sample index.
        label_column: the column of class labels (default: the first of ``target``, ``targets``,
            ``label``, ``labels``, ``y`` the data set has); the batches' targets are read from it.
        transform, target_transform: applied to a row's input (the first of ``input``, ``inputs``,
            ``image``, ``images``, ``x``) and to its label.

    Sample ``i`` is the row whose index is ``i``, so collectors, selections and
    :class:`~lightning_prune.PrunedDataModule` address the same sample whatever the row order.

    Example::

        >>> import datasets
        >>> from lightning_prune import HFIndexedDataset
        >>> rows = datasets.Dataset.from_dict({"x": [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], "label": [0, 1, 0]})
        >>> train_set = HFIndexedDataset(rows.with_format("torch"))
        >>> train_set[2]
        {'x': tensor([4., 5.]), 'label': tensor(0), 'index': 2}
        >>> train_set.targets.tolist()
        [0, 1, 0]
    """

    def __init__(
        self,
        dataset: Any,
        index_column: str | None = None,
        label_column: str | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        _check_hf_dataset(dataset, "HFIndexedDataset")
        # A column named like the index key batches are read by, but other than the index, would be read as
        # the sample index by half the code and overwritten by the other half: refuse it.
        clashing = [name for name in dataset.column_names if name == INDEX_KEYS[0] and name != index_column]
        if clashing:
            raise ValueError(
                f"The dataset has a column {clashing[0]!r}, the key the sample index is added under. If it holds the "
                f"sample index, say so with index_column={clashing[0]!r}; otherwise rename it, e.g. "
                f"dataset.rename_column({clashing[0]!r}, 'row_index')."
            )
        self.dataset = dataset
        self.index_column = index_column
        self.label_column = _label_column(dataset, label_column)
        self.transform = transform
        self.target_transform = target_transform
        self._rows = _rows_by_index(dataset, index_column)

    def __len__(self) -> int:
        return len(self.dataset)

    def _row(self, index: int) -> int:
        return int(index) if self._rows is None else int(self._rows[index])

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The row numbers of the samples ``indices`` in the wrapped ``datasets.Dataset``."""
        indices = np.asarray(indices, dtype=np.int64)
        return indices if self._rows is None else self._rows[indices]

    def __getitem__(self, index: int) -> Any:
        return indexed_item(
            self.dataset[self._row(index)], int(index), self.transform, self.target_transform, "HFIndexedDataset"
        )

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        # the DataLoader's fetcher asks for a whole batch at once: one Arrow read instead of one per row
        rows = self.dataset.__getitems__([self._row(index) for index in indices])
        return [
            indexed_item(row, int(index), self.transform, self.target_transform, "HFIndexedDataset")
            for row, index in zip(rows, indices, strict=True)
        ]

    @property
    def targets(self) -> np.ndarray:
        """The labels in sample-index order, read from the label column at once (computed once)."""
        if not hasattr(self, "_targets"):
            if self.label_column is None:
                raise ValueError(
                    f"This dataset has no label column (one of {list(TARGET_KEYS)}); its columns are "
                    f"{list(self.dataset.column_names)}. Pass label_column=... or rename the label column to 'label'."
                )
            labels = np.asarray(self.dataset.with_format("numpy")[self.label_column]).astype(np.int64)
            self._targets = labels if self._rows is None else labels[self._rows]
        return self._targets


def pruned_hf_dataset(
    dataset: Any, selection: Selection | str, index_column: str | None = None, source_column: str | None = None
) -> Any:
    """The rows of ``dataset`` that ``selection`` keeps, as a ``datasets.Dataset`` (one ``Dataset.select``).

    Args:
        dataset: the ``datasets.Dataset`` that was scored (or the :class:`HFIndexedDataset` over it,
            whose ``index_column`` is then used).
        selection: a :class:`~lightning_prune.Selection` or the path of a saved one.
        index_column: the column holding the sample index the selection refers to; ``None``: the
            row number (as :class:`HFIndexedDataset` defaults to).
        source_column: add a column of this name holding each kept row's sample index (for a data
            set without an index column, so the pruned copy still names its samples).

    The selection is checked against the data set (its size, and its label fingerprint where the
    data set has a label column). Rows come in sample-index order.

    Example::

        >>> import datasets, numpy as np
        >>> from lightning_prune import Selection, pruned_hf_dataset
        >>> rows = datasets.Dataset.from_dict({"x": [[0.0], [1.0], [2.0], [3.0]], "label": [0, 1, 0, 1]})
        >>> pruned = pruned_hf_dataset(rows, Selection(np.array([3, 1]), num_samples=4), source_column="source_index")
        >>> pruned["source_index"][:], pruned["x"][:]
        ([1, 3], [[1.0], [3.0]])
    """
    if isinstance(selection, str):
        selection = Selection.load(selection)
    if isinstance(dataset, HFIndexedDataset):
        if index_column is not None and index_column != dataset.index_column:
            raise ValueError(
                f"index_column={index_column!r}, but the HFIndexedDataset indexes by {dataset.index_column!r}; "
                "leave index_column out to use the dataset's."
            )
        indexed = dataset
    else:
        _check_hf_dataset(dataset, "pruned_hf_dataset")
        indexed = HFIndexedDataset(dataset, index_column=index_column)
    labels = indexed.targets if indexed.label_column is not None and selection.label_fingerprint else None
    selection.check_dataset(len(indexed), labels)
    source = indexed.dataset
    if source_column is not None and source_column in source.column_names:
        raise ValueError(
            f"source_column={source_column!r} is already a column of the dataset; choose another name, or leave "
            "source_column out (the index column already names each sample)."
        )
    pruned = source.select(indexed.rows(selection.indices))
    if source_column is not None:
        pruned = pruned.add_column(source_column, selection.indices.tolist())
    return pruned
