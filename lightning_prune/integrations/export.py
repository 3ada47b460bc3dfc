"""Export a selection for any pipeline: ids, tables, a pruned ``datasets.Dataset``, a pruned LitData copy.

Every export is the output (a file or a directory) plus its manifest beside it, ``<output>.manifest.json``
(the same fields as the ``.npz`` files' manifest: method, hyper-parameters, ``N``, label fingerprint,
library version, creation time, and what the output holds). Both are written atomically.
:func:`load_exported` reads any export back into a :class:`~lightning_prune.Selection`.

Formats (:data:`EXPORT_FORMATS`, a registry):

* ``npy``: the kept samples' ids, sorted, ``int64`` (``numpy.load`` reads it; DataComp's form).
* ``csv`` and ``parquet``: one row per sample of the full data set, columns ``id``, ``kept``
  (0/1), ``weight`` (the selection's weight; 1 for a kept sample of an unweighted selection, 0
  for a pruned one) and ``score`` (the scores passed, else empty). Parquet needs ``pyarrow``
  (extra ``[hf]``).
* ``hf``: the pruned ``datasets.Dataset`` (``save_to_disk``), its rows carrying their sample index
  (the data set's index column, or an added ``source_index``). Needs the scored ``datasets.Dataset``.
* ``litdata``: a pruned optimised copy (``litdata.optimize``), each item carrying ``source_index``.
  Needs the optimised data set's directory.

The id of a sample is its index in the full training set, the index the collectors scored it by.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightning_prune.integrations._optional import import_optional
from lightning_prune.selection.files import (
    FORMAT_VERSION,
    ScoreFileError,
    build_manifest,
    write_atomic,
    write_directory_atomic,
    write_text_atomic,
)
from lightning_prune.selection.scores import Scores, check_same_dataset
from lightning_prune.selection.selection import Selection

TABLE_COLUMNS = ("id", "kept", "weight", "score")
HF_SOURCE_COLUMN = "source_index"


@dataclass
class ExportRequest:
    """What an export writes from: the selection, optional scores and the data set, and the writer's options."""

    selection: Selection
    scores: Scores | None = None
    dataset: Any = None
    index_column: str | None = None


@dataclass(frozen=True)
class ExportFormat:
    """One way of writing a selection: ``write`` produces ``target`` and returns what the manifest adds about it;
    ``read`` returns ``(indices, weights or None)`` from ``target`` and its manifest."""

    name: str
    description: str
    write: Callable[[ExportRequest, Path], dict[str, Any]]
    read: Callable[[Path, Mapping[str, Any]], tuple[np.ndarray, np.ndarray | None]]
    is_directory: bool = False
    needs: str | None = None  # what `dataset` must be, for the formats that copy the data


EXPORT_FORMATS: dict[str, ExportFormat] = {}
"""The export formats by name; :func:`register_export_format` adds one."""


def register_export_format(export_format: ExportFormat) -> ExportFormat:
    if export_format.name in EXPORT_FORMATS:
        raise ValueError(f"An export format named {export_format.name!r} is already registered.")
    EXPORT_FORMATS[export_format.name] = export_format
    return export_format


def manifest_path(output: str | os.PathLike) -> Path:
    """Where the manifest of the export at ``output`` lies: ``<output>.manifest.json``."""
    target = Path(output)
    return target.with_name(target.name + ".manifest.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _full_columns(request: ExportRequest) -> dict[str, np.ndarray]:
    """The table of every sample: id, kept, weight, score (NaN where no scores were given)."""
    selection = request.selection
    n = selection.num_samples
    kept = selection.mask()
    weight = np.zeros(n, dtype=np.float32)
    weight[selection.indices] = 1.0 if selection.weights is None else selection.weights
    score = np.full(n, np.nan) if request.scores is None else request.scores.values
    return {"id": np.arange(n, dtype=np.int64), "kept": kept.astype(np.int8), "weight": weight, "score": score}


def _table_manifest(request: ExportRequest) -> dict[str, Any]:
    scores = request.scores
    return {
        "columns": list(TABLE_COLUMNS),
        "rows": "every sample of the full data set, by id",
        "weight": "selection weights" if request.selection.weights is not None else "1 kept, 0 pruned (unweighted)",
        "score_method": None if scores is None else scores.method,
        "score_meaning": None if scores is None else scores.meaning.value,
    }


def _indices_from_table(
    columns: Mapping[str, np.ndarray], manifest: Mapping[str, Any], source: Path
) -> tuple[np.ndarray, np.ndarray | None]:
    missing = [name for name in TABLE_COLUMNS if name not in columns]
    if missing:
        raise ScoreFileError(f"{source}: the table has no column(s) {missing}; it is not a lightning-prune export.")
    ids, kept = np.asarray(columns["id"], dtype=np.int64), np.asarray(columns["kept"]).astype(bool)
    if ids.size != manifest["num_samples"] or not np.array_equal(ids, np.arange(ids.size)):
        raise ScoreFileError(
            f"{source}: the table's ids are not 0 .. {manifest['num_samples'] - 1} in order; the file was edited or "
            "truncated. Export it again."
        )
    weights = np.asarray(columns["weight"], dtype=np.float32)[kept] if manifest.get("weighted") else None
    return ids[kept], weights


# ---- npy -------------------------------------------------------------------------------------------------------------


def _write_npy(request: ExportRequest, target: Path) -> dict[str, Any]:
    write_atomic(target, lambda handle: np.save(handle, request.selection.indices, allow_pickle=False))
    return {"contents": "sorted int64 ids of the kept samples"}


def _read_npy(source: Path, manifest: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    ids = np.load(source, allow_pickle=False)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise ScoreFileError(f"{source}: expected a 1-D array of integer ids, got {ids.dtype} of shape {ids.shape}.")
    return ids.astype(np.int64), None


# ---- csv -------------------------------------------------------------------------------------------------------------


def _write_csv(request: ExportRequest, target: Path) -> dict[str, Any]:
    columns = _full_columns(request)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    # repr-exact floats (numpy's shortest round-trip form), an empty cell for a missing score
    for i, kept, weight, score in zip(*(columns[name].tolist() for name in TABLE_COLUMNS), strict=True):
        writer.writerow((i, kept, repr(weight), "" if score != score else repr(score)))
    write_text_atomic(target, text.getvalue())
    return _table_manifest(request)


def _read_csv(source: Path, manifest: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(rows[0]) != TABLE_COLUMNS:
        raise ScoreFileError(f"{source}: the header is {rows[0] if rows else None}, expected {list(TABLE_COLUMNS)}.")
    body = rows[1:]
    columns: dict[str, np.ndarray] = {
        "id": np.asarray([int(row[0]) for row in body], dtype=np.int64),
        "kept": np.asarray([int(row[1]) for row in body], dtype=np.int8),
        "weight": np.asarray([float(row[2]) for row in body], dtype=np.float32),
        "score": np.asarray([float(row[3]) if row[3] else np.nan for row in body]),
    }
    return _indices_from_table(columns, manifest, source)


# ---- parquet ---------------------------------------------------------------------------------------------------------


def _pyarrow(purpose: str) -> tuple[Any, Any]:
    pyarrow = import_optional("pyarrow", purpose)
    return pyarrow, import_optional("pyarrow.parquet", purpose)


def _write_parquet(request: ExportRequest, target: Path) -> dict[str, Any]:
    pa, pq = _pyarrow("Exporting a selection as Parquet")
    columns = _full_columns(request)
    arrays = {name: pa.array(values) for name, values in columns.items()}
    arrays["score"] = pa.array(columns["score"], mask=np.isnan(columns["score"]))  # a missing score is null
    write_atomic(target, lambda handle: pq.write_table(pa.table(arrays), handle))
    return _table_manifest(request)


def _read_parquet(source: Path, manifest: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    _, pq = _pyarrow("Reading a Parquet export")
    table = pq.read_table(source)
    columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    return _indices_from_table(columns, manifest, source)


# ---- hf --------------------------------------------------------------------------------------------------------------


def _write_hf(request: ExportRequest, target: Path) -> dict[str, Any]:
    from lightning_prune.integrations.hf import pruned_hf_dataset

    dataset = request.dataset
    if isinstance(dataset, (str, os.PathLike)):
        dataset = import_optional("datasets", "Exporting a selection as a datasets.Dataset").load_from_disk(
            str(dataset)
        )
    index_column = request.index_column or getattr(dataset, "index_column", None)
    source_column = None if index_column is not None else HF_SOURCE_COLUMN
    pruned = pruned_hf_dataset(dataset, request.selection, index_column=index_column, source_column=source_column)
    write_directory_atomic(target, lambda directory: pruned.save_to_disk(str(directory)))
    return {"contents": "datasets.Dataset.save_to_disk", "index_column": index_column or source_column}


def _read_hf(source: Path, manifest: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    datasets = import_optional("datasets", "Reading a datasets.Dataset export")
    pruned = datasets.load_from_disk(str(source))
    return np.sort(np.asarray(pruned[manifest["index_column"]], dtype=np.int64)), None


# ---- litdata ---------------------------------------------------------------------------------------------------------


def _write_litdata(request: ExportRequest, target: Path) -> dict[str, Any]:
    from lightning_prune.integrations.litdata import SOURCE_INDEX_KEY, write_pruned_streaming

    if request.dataset is None:
        raise ValueError("The litdata export copies the data: pass the optimised data set's directory as dataset=...")
    write_pruned_streaming(request.dataset, request.selection, target, index_key=SOURCE_INDEX_KEY)
    return {"contents": "litdata.optimize output", "index_key": SOURCE_INDEX_KEY}


def _read_litdata(source: Path, manifest: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    from lightning_prune.integrations.litdata import source_indices

    return np.sort(source_indices(source, manifest["index_key"])), None


for _format in (
    ExportFormat("npy", "sorted .npy of the kept samples' ids", _write_npy, _read_npy),
    ExportFormat("csv", "CSV table of every sample: id, kept, weight, score", _write_csv, _read_csv),
    ExportFormat("parquet", "Parquet table of every sample: id, kept, weight, score", _write_parquet, _read_parquet),
    ExportFormat(
        "hf", "the pruned datasets.Dataset (save_to_disk)", _write_hf, _read_hf, True, "a datasets.Dataset or its path"
    ),
    ExportFormat(
        "litdata",
        "a pruned optimised LitData copy (litdata.optimize)",
        _write_litdata,
        _read_litdata,
        True,
        "the optimised data set's directory",
    ),
):
    register_export_format(_format)


def _check_format(name: str) -> ExportFormat:
    if name not in EXPORT_FORMATS:
        raise ValueError(f"Unknown export format {name!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    return EXPORT_FORMATS[name]


def export_selection(
    selection: Selection | str | os.PathLike,
    output: str | os.PathLike,
    format: str = "npy",
    *,
    scores: Scores | str | os.PathLike | None = None,
    dataset: Any = None,
    index_column: str | None = None,
) -> Path:
    """Write ``selection`` to ``output`` in ``format`` (see :data:`EXPORT_FORMATS`), with ``<output>.manifest.json``.

    Args:
        selection: a :class:`~lightning_prune.Selection` or the path of a saved one.
        output: the file (``npy``, ``csv``, ``parquet``) or directory (``hf``, ``litdata``) to write;
            an existing one is replaced, atomically.
        format: ``npy``, ``csv``, ``parquet``, ``hf`` or ``litdata``.
        scores: the scores the selection was made from (or their path), for the tables' ``score``
            column; checked to be of the same data set.
        dataset: the data to copy for ``hf`` (a ``datasets.Dataset``, an
            :class:`~lightning_prune.HFIndexedDataset` or a ``save_to_disk`` directory) and ``litdata``
            (the optimised data set's directory).
        index_column: ``hf``: the column holding the sample index (default: the row number).

    Returns the path of the output.

    Example::

        >>> import numpy as np
        >>> from lightning_prune import Selection, export_selection, load_exported
        >>> selection = Selection(np.array([4, 0, 2]), num_samples=6)
        >>> export_selection(selection, "kept.npy").name, np.load("kept.npy").tolist()
        ('kept.npy', [0, 2, 4])
        >>> print(open(export_selection(selection, "kept.csv", "csv")).read().splitlines()[:3])
        ['id,kept,weight,score', '0,1,1.0,', '1,0,0.0,']
        >>> load_exported("kept.csv").indices.tolist()
        [0, 2, 4]
    """
    export_format = _check_format(format)
    if not isinstance(selection, Selection):
        selection = Selection.load(selection)
    if scores is not None and not isinstance(scores, Scores):
        scores = Scores.load(scores)
    if scores is not None:
        check_same_dataset(
            f"These {scores.method} scores",
            num_samples=scores.num_samples,
            fingerprint=scores.label_fingerprint,
            dataset_size=selection.num_samples,
        )
        if selection.label_fingerprint and scores.label_fingerprint not in (None, selection.label_fingerprint):
            raise ScoreFileError(
                f"The {scores.method} scores were made for a data set with other labels than this {selection.method} "
                "selection's (label fingerprints differ); export the scores the selection was made from."
            )
    if export_format.needs is not None and dataset is None:
        raise ValueError(f"The {format!r} export copies the data: pass dataset=... ({export_format.needs}).")
    if index_column is not None and format != "hf":
        raise ValueError(f"index_column applies to the 'hf' export only, not to {format!r}.")
    target = Path(output)
    if target.is_dir() and not export_format.is_directory:
        raise IsADirectoryError(f"{target} is a directory; the {format!r} export is a file. Give a file path.")
    described = export_format.write(ExportRequest(selection, scores, dataset, index_column), target)
    manifest = build_manifest(
        "export",
        method=selection.method,
        hparams=selection.hparams,
        num_samples=selection.num_samples,
        labels_fingerprint=selection.label_fingerprint,
        extra={
            "export_format": format,
            "output": target.name,
            "num_kept": len(selection),
            "prune_ratio": selection.prune_ratio,
            "weighted": selection.weights is not None,
            "id": "the sample's index in the full training set",
            **({} if export_format.is_directory else {"sha256": _sha256(target)}),
            **described,
        },
    )
    write_text_atomic(manifest_path(target), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def load_exported(output: str | os.PathLike) -> Selection:
    """Read an export written by :func:`export_selection` back into a :class:`~lightning_prune.Selection`.

    The manifest beside ``output`` says the format; a file whose content no longer matches its manifest
    (edited, truncated, replaced) is refused.
    """
    target = Path(output)
    where = manifest_path(target)
    if not target.exists():
        raise ScoreFileError(f"{target}: no such export. Write it first with export_selection(...).")
    if not where.is_file():
        raise ScoreFileError(
            f"{target}: its manifest {where.name} is missing, so what the export holds is unknown; export it again."
        )
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ScoreFileError(f"{where}: unreadable manifest ({error}); export it again.") from error
    if manifest.get("format") != "lightning-prune/export":
        raise ScoreFileError(f"{where}: not the manifest of a lightning-prune export ({manifest.get('format')!r}).")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ScoreFileError(f"{where}: written by a newer lightning-prune; upgrade lightning-prune.")
    export_format = _check_format(manifest.get("export_format", "?"))
    if "sha256" in manifest and _sha256(target) != manifest["sha256"]:
        raise ScoreFileError(
            f"{target}: its content differs from what its manifest records (sha256); the file was changed after the "
            "export. Export it again."
        )
    indices, weights = export_format.read(target, manifest)
    if indices.size != manifest.get("num_kept"):
        raise ScoreFileError(
            f"{target}: holds {indices.size} kept samples, its manifest says {manifest.get('num_kept')}; export it again."
        )
    return Selection(
        indices=indices,
        num_samples=manifest["num_samples"],
        weights=weights,
        method=manifest.get("method", "unknown"),
        hparams=manifest.get("hparams", {}),
        label_fingerprint=manifest.get("label_fingerprint"),
    )
