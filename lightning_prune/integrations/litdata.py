"""LitData: score a ``StreamingDataset``, serve a selection with ``subset``, write a pruned copy (extra ``[litdata]``).

The stable per-sample index of an optimised data set is the sample's **position on disk**: the
order of its chunks in ``index.json`` and of the samples within each chunk, i.e. what
``StreamingDataset(input_dir)[i]`` reads. :class:`IndexedStreamingDataset` adds that position to
every item it streams, whatever LitData's shuffling, its split across DDP ranks and dataloader
workers, or a ``subset(...)`` of it (whose own ``__getitem__`` counts from 0 again), so collectors
key their state by it exactly as they key a map-style data set's index.

Under DDP, LitData gives each rank its own chunks and Lightning adds no sampler to an iterable
data set. LitData reads the rank and world size when a data set is *constructed*; one built before
``Trainer.fit`` starts the process group (as a script's data set is) reads world size 1 on every
rank, every rank then streams the whole data set, and the fit hangs in its first gradient all-reduce
once the ranks' batch counts differ (litdata issues #411, #440). :class:`IndexedStreamingDataset`
re-reads them the first time it is measured (``len``, which LitData answers through ``get_len``)
or iterated inside a process group, as if it had been built there; the collectors refuse a plain
``StreamingDataset`` built too early. Two more things
LitData decides and a scoring run must know: ``len()`` of a streaming data set is this rank's share
(the collectors size their state by ``full_size`` instead), and under DDP its ``drop_last`` defaults to
``True``, dropping the last ``N mod (world_size * batch_size)`` samples of every epoch (samples never
seen have no score).

Importing this module imports ``litdata``; without it the import fails with the extra to install.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from lightning_prune.data.indexed import INDEX_KEYS, indexed_item
from lightning_prune.integrations._optional import missing_extra
from lightning_prune.selection.files import write_directory_atomic
from lightning_prune.selection.selection import Selection

try:
    import litdata
    from litdata.utilities.dataset_utilities import load_index_file
    from litdata.utilities.env import _DistributedEnv
except ImportError as error:
    raise missing_extra("litdata", "lightning_prune.integrations.litdata", error) from error

SOURCE_INDEX_KEY = "source_index"
"""The key under which :func:`write_pruned_streaming` records each copied sample's position in its source."""


def _chunk_starts(input_dir: str) -> tuple[dict[str, int], int]:
    """Each chunk file's first position on disk, and the number of samples, from ``index.json``."""
    chunks = load_index_file(input_dir)["chunks"]
    starts, position = {}, 0
    for chunk in chunks:
        starts[chunk["filename"]] = position
        position += int(chunk["chunk_size"])
    return starts, position


def _local_dir(dataset: Any, purpose: str) -> str:
    path = getattr(getattr(dataset, "input_dir", None), "path", None)
    if not path or not os.path.isfile(os.path.join(path, "index.json")):
        raise ValueError(
            f"{purpose} reads the optimised data set's index.json, which is not at {path!r}. Point the "
            "StreamingDataset at a local directory written by litdata.optimize (or the cache of a remote one, after "
            "its first read)."
        )
    return str(path)


class IndexedStreamingDataset(litdata.StreamingDataset):
    """A ``litdata.StreamingDataset`` whose items carry their position on disk as the sample index.

    Takes ``StreamingDataset``'s arguments. Items ``(x, y)`` become ``(x, y, index)`` and dict items
    get ``"index"``, as :class:`~lightning_prune.IndexedDataset` does for map-style data sets, so a
    ``training_step`` written for the collectors reads them unchanged. ``subset(indices)`` keeps the
    class, and the items of the subset keep their positions in the full data set.

    Example::

        >>> import numpy as np
        >>> import litdata
        >>> from lightning_prune.integrations.litdata import IndexedStreamingDataset
        >>> samples = [{"x": np.full(2, i, dtype=np.float32), "label": i % 2} for i in range(6)]
        >>> litdata.optimize(fn=dict, inputs=samples, output_dir="optimised", chunk_size=4, num_workers=1, verbose=False)
        >>> train_set = IndexedStreamingDataset("optimised")
        >>> train_set.full_size, train_set[5]["index"]
        (6, 5)
        >>> sorted(int(item["index"]) for item in train_set.subset([1, 4]))
        [1, 4]
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bound = inspect.signature(litdata.StreamingDataset.__init__).bind(self, *args, **kwargs)
        self._drop_last_given: bool | None = bound.arguments.get("drop_last")

    def get_len(self, num_workers: int, batch_size: int) -> int:
        self._join_process_group()
        return super().get_len(num_workers, batch_size)

    def __iter__(self) -> Any:
        self._join_process_group()
        return super().__iter__()

    def _join_process_group(self) -> None:
        """Take the rank and world size of the running process group, where LitData read none at construction.

        Nothing changes outside a process group (a DataLoader worker inherits its rank from the main
        process's copy) or where the data set already has the group's rank and size. Otherwise this
        repeats what ``StreamingDataset.__init__`` does under DDP: ``drop_last`` becomes ``True``
        unless it was given as ``False``, and the epoch's plan is drawn again.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        env = _DistributedEnv.detect()
        known = cast(Any, self).distributed_env  # typed by litdata only through its __init__
        if (env.world_size, env.global_rank, env.num_nodes) == (known.world_size, known.global_rank, known.num_nodes):
            return
        self.distributed_env = env
        if env.world_size > 1 and self._drop_last_given is None:
            self.drop_last = True
        self.shuffler = None

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if isinstance(index, str):  # get_by_key reads the item through __getitem__ with its ChunkedIndex
            return super().__getitem__(index)
        item = super().__getitem__(index)
        return self._with_index(item, self._position(index))

    @property
    def full_size(self) -> int:
        """The number of samples of the optimised data set on disk: the size of the index space (``N``)."""
        return _chunk_starts(_local_dir(self, "IndexedStreamingDataset.full_size"))[1]

    def _position(self, index: Any) -> int:
        config = self.cache._reader.config
        if isinstance(index, (int, np.integer)):
            global_index, chunk_index = config._get_chunk_index_from_index(int(index))
        else:  # a ChunkedIndex from the streaming iterator
            global_index, chunk_index = int(index.index), int(index.chunk_index)
        offsets = self._offsets(config)
        return global_index + offsets[chunk_index]

    def _offsets(self, config: Any) -> list[int]:
        """Per chunk of this (possibly subset) data set: its position on disk minus its start in LitData's count."""
        cached: tuple[Any, list[int]] | None = getattr(self, "_offsets_cache", None)
        if cached is not None and cached[0] is config:
            return cached[1]
        starts, _ = _chunk_starts(_local_dir(self, "IndexedStreamingDataset"))
        files = self.subsampled_files
        intervals = config.intervals
        if len(files) != len(intervals):
            raise RuntimeError(
                f"litdata {litdata.__version__}: {len(files)} chunk files for {len(intervals)} chunk intervals; "
                "IndexedStreamingDataset reads positions the way litdata 0.2.76 lays them out. Report this with your "
                "litdata version."
            )
        offsets = [starts[name] - int(interval[0]) for name, interval in zip(files, intervals, strict=True)]
        self._offsets_cache: tuple[Any, list[int]] | None = (config, offsets)
        return offsets

    def _with_index(self, item: Any, position: int) -> Any:
        if isinstance(item, Mapping) and INDEX_KEYS[0] in item:
            raise ValueError(
                f"This data set's items already have an {INDEX_KEYS[0]!r} field ({item[INDEX_KEYS[0]]!r}), the key "
                "IndexedStreamingDataset adds the sample's position under. Rename the field when optimising, or "
                "stream it with litdata.StreamingDataset if it is the sample index."
            )
        return indexed_item(item, position, source="IndexedStreamingDataset")

    def reset(self) -> None:
        super().reset()
        self._offsets_cache = None


def _full_dataset_dir(dataset: Any, selection: Selection, purpose: str) -> str:
    """The local directory of ``dataset``, checked to be the whole data set ``selection`` was made for."""
    input_dir = _local_dir(dataset, purpose) if not isinstance(dataset, (str, os.PathLike)) else str(dataset)
    _, size = _chunk_starts(input_dir)
    selection.check_dataset(size)
    if not isinstance(dataset, (str, os.PathLike)):
        served = sum(end - start for start, end in dataset.region_of_interest)
        if served != size:
            raise ValueError(
                f"{purpose}: this StreamingDataset serves {served} of the {size} samples on disk (subsample=... or a "
                "subset); a selection names positions in the whole data set. Open it whole: "
                f"IndexedStreamingDataset({input_dir!r})."
            )
    return input_dir


def pruned_streaming_dataset(dataset: Any, selection: Selection | str) -> Any:
    """``dataset.subset(selection.indices)``: the selected samples, streamed by LitData with its shuffling and DDP split.

    ``dataset`` is the whole optimised data set (an :class:`IndexedStreamingDataset`, whose items then
    keep their positions, or a plain ``litdata.StreamingDataset``); the selection is checked against
    its size on disk. The result is a ``StreamingDataset`` of the same class and settings.
    """
    if isinstance(selection, (str, os.PathLike)):
        selection = Selection.load(selection)
    if not isinstance(dataset, litdata.StreamingDataset):
        raise TypeError(
            f"pruned_streaming_dataset needs a litdata.StreamingDataset, got {type(dataset).__name__}; open the "
            "optimised directory with IndexedStreamingDataset(input_dir)."
        )
    _full_dataset_dir(dataset, selection, "pruned_streaming_dataset")
    return dataset.subset(selection.indices.tolist())


_READERS: dict[str, Any] = {}


def _copy_item(input_dir: str, index_key: str | None, position: int) -> Any:
    """Sample ``position`` of the data set at ``input_dir``, with its position under ``index_key`` (a worker's step)."""
    reader = _READERS.get(input_dir)
    if reader is None:
        reader = _READERS[input_dir] = litdata.StreamingDataset(input_dir)
    item = reader[int(position)]
    if index_key is None:
        return item
    if not isinstance(item, Mapping):
        raise TypeError(
            f"write_pruned_streaming records each sample's source position under {index_key!r}, which needs dict "
            f"items; this data set's items are {type(item).__name__}. Pass index_key=None to copy them as they are."
        )
    if index_key in item:
        raise ValueError(f"The items already have a field {index_key!r}; pass another index_key=... (or None).")
    return {**item, index_key: int(position)}


def write_pruned_streaming(
    source: Any,
    selection: Selection | str,
    output_dir: str | os.PathLike,
    *,
    index_key: str | None = SOURCE_INDEX_KEY,
    chunk_bytes: int | str | None = None,
    chunk_size: int | None = None,
    num_workers: int = 1,
    optimize_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Write the selected samples of an optimised data set as a new optimised data set, with ``litdata.optimize``.

    Args:
        source: the optimised data set: its local directory, or a ``StreamingDataset`` over it (whole).
        selection: a :class:`~lightning_prune.Selection` (or the path of a saved one) over ``source``.
        output_dir: the directory of the copy; written beside it and renamed in place when complete
            (an existing copy there is replaced).
        index_key: each copied dict item gets its position in ``source`` under this key (``None``:
            items are copied unchanged, and the copy cannot name its samples' origin).
        chunk_bytes, chunk_size: the copy's chunking (LitData's; default ``chunk_bytes="64MB"``).
        num_workers: ``optimize``'s worker processes; the copy keeps the selection's order with one.
        optimize_kwargs: further arguments of ``litdata.optimize`` (compression, encryption, ...).

    Returns the copy's directory. Train elsewhere with ``litdata.StreamingDataset(output_dir)``.
    """
    if isinstance(selection, (str, os.PathLike)):
        selection = Selection.load(selection)
    input_dir = _full_dataset_dir(source, selection, "write_pruned_streaming")
    if chunk_bytes is None and chunk_size is None:
        chunk_bytes = "64MB"
    fn: Callable[[int], Any] = partial(_copy_item, os.path.abspath(input_dir), index_key)
    extra = dict(optimize_kwargs or {})

    def write(directory: Path) -> None:
        litdata.optimize(
            fn=fn,
            inputs=selection.indices.tolist(),
            output_dir=str(directory),
            chunk_bytes=chunk_bytes,
            chunk_size=chunk_size,
            num_workers=num_workers,
            reorder_files=False,
            **{"keep_data_ordered": True, "verbose": False, **extra},
        )

    return write_directory_atomic(output_dir, write)


def source_indices(copy_dir: str | os.PathLike, index_key: str = SOURCE_INDEX_KEY) -> np.ndarray:
    """The source positions a copy written by :func:`write_pruned_streaming` holds, in the copy's order."""
    reader = litdata.StreamingDataset(str(copy_dir))
    positions = []
    for i in range(len(reader)):
        item = reader[i]
        if not isinstance(item, Mapping) or index_key not in item:
            raise ValueError(
                f"{copy_dir}: item {i} has no {index_key!r} field; the copy was written with index_key=None or "
                "another key, and does not name its samples' source positions."
            )
        positions.append(int(item[index_key]))
    return np.asarray(positions, dtype=np.int64)
