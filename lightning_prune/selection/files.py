"""The on-disk format shared by every file lightning-prune writes (scores, selections, masks).

A file is a NumPy ``.npz`` archive whose arrays hold the data and whose ``__manifest__`` entry is
a JSON document saying what the file is: its kind, the method and hyper-parameters that produced
it, the data-set size and label fingerprint, the library version and the creation time. Files are
written to a temporary name in the target folder and renamed, so a crash never leaves a
half-written file under the real name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lightning_prune._version import __version__

FORMAT_VERSION = 1
_MANIFEST_KEY = "__manifest__"


class ScoreFileError(ValueError):
    """A lightning-prune file is missing, truncated, foreign or made for another data set."""


def library_version() -> str:
    return __version__


def integer_labels(labels: Any) -> np.ndarray:
    """``labels`` as int64, refusing values that are not whole class numbers (no silent truncation)."""
    array = np.asarray(labels)
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    try:
        as_float = array.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"labels must be whole class numbers; got values of type {array.dtype}.") from None
    whole = np.isfinite(as_float) & (as_float == np.round(as_float))
    if not whole.all():
        bad = as_float[~whole][:3].tolist()
        raise ValueError(
            f"labels must be whole class numbers (0, 1, 2, ...); got {bad}. Pass the integer class labels, "
            "not probabilities or soft labels."
        )
    return as_float.astype(np.int64)


def label_fingerprint(labels: np.ndarray | None) -> str | None:
    """A short, stable hash of a data set's labels in index order (``None`` when unknown).

    Two data sets with the same size but other labels, or the same labels in another order, get
    other fingerprints, so a score or selection file cannot silently be applied to the wrong data.
    """
    if labels is None:
        return None
    canonical = np.ascontiguousarray(integer_labels(labels))
    return hashlib.sha256(canonical.tobytes()).hexdigest()[:16]


def to_jsonable(value: Any) -> Any:
    """Hyper-parameters as plain JSON (tuples become lists, NumPy scalars become numbers)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def build_manifest(
    kind: str,
    *,
    method: str,
    hparams: Mapping[str, Any],
    num_samples: int,
    labels_fingerprint: str | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format": f"lightning-prune/{kind}",
        "format_version": FORMAT_VERSION,
        "method": method,
        "hparams": to_jsonable(dict(hparams)),
        "num_samples": int(num_samples),
        "label_fingerprint": labels_fingerprint,
        "library_version": library_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        manifest.update(to_jsonable(dict(extra)))
    return manifest


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` (its return value is ignored) on a temporary file beside ``path``, then rename
    it to ``path``.

    Readers see the old file or the complete new one, never a half-written one; on failure the
    temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp creates 0600 whatever the umask
        os.replace(tmp_name, target)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return target


def write_directory_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(directory)`` on a fresh temporary directory beside ``path``, then rename it to ``path``.

    For outputs that are directories (a ``datasets.Dataset`` saved to disk, a LitData copy): readers see
    the old directory or the complete new one; an existing ``path`` is replaced only once the new one
    is complete, and on failure the temporary directory is removed and ``path`` is untouched.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file; the output here is a directory. Remove it or choose another path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    # mkdtemp makes an empty directory, which writers such as litdata.optimize want to create themselves
    staging.rmdir()
    retired = None
    try:
        write(staging)
        if not staging.is_dir():
            raise RuntimeError(f"The writer of {target} produced no directory.")
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            retired.rmdir()
            os.replace(target, retired)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None and retired.exists() and not target.exists():
            os.replace(retired, target)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
    return target


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def npz_path(path: str | os.PathLike) -> Path:
    """The file ``write_npz(path)`` writes: ``path`` with ``.npz`` appended unless it ends so."""
    target = Path(path)
    return target if target.suffix == ".npz" else target.with_name(target.name + ".npz")


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> Path:
    """Write ``arrays`` and ``manifest`` to ``npz_path(path)`` atomically; returns the final path."""
    target = npz_path(path)
    payload = {name: np.asarray(array) for name, array in arrays.items()}
    payload[_MANIFEST_KEY] = np.array(json.dumps(manifest, sort_keys=True))
    # numpy's stub, savez(file, *args, allow_pickle: bool = ..., **kwds: ArrayLike), makes mypy match the
    # arrays in **payload against allow_pickle as well
    return write_atomic(target, lambda handle: np.savez(handle, **payload))  # type: ignore[arg-type]


def read_npz(path: str | os.PathLike, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`write_npz`, checking that it is a complete file of ``kind``.

    ``path`` is read as given when it exists, else as ``npz_path(path)``: ``save("x")`` writes ``x.npz``
    and ``load("x")`` reads it back.
    """
    source = Path(path)
    if not source.exists() and npz_path(source).exists():
        source = npz_path(source)
    if not source.exists():
        raise ScoreFileError(f"{source}: no such file. Check the path, or write it first with .save().")
    expected = f"lightning-prune/{kind}"
    if not zipfile.is_zipfile(source):
        raise ScoreFileError(
            f"{source}: not a lightning-prune {kind} file. {kind.capitalize()}.load() reads the .npz files that "
            f"{kind.capitalize()}.save() writes (an archive with a manifest). For a plain array, e.g. from np.save, "
            f"build the object from np.load(path) instead."
        )
    try:
        with np.load(source, allow_pickle=False) as archive:
            names = list(archive.files)
            if _MANIFEST_KEY not in names:
                raise ScoreFileError(
                    f"{source}: not a lightning-prune {kind} file (it has no manifest). "
                    f"Load files written by lightning-prune's {kind.capitalize()}.save()."
                )
            manifest = json.loads(str(archive[_MANIFEST_KEY]))
            arrays = {name: archive[name] for name in names if name != _MANIFEST_KEY}
    except ScoreFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise ScoreFileError(
            f"{source}: unreadable or truncated file ({type(error).__name__}: {error}). "
            "Regenerate it; lightning-prune writes files atomically, so a complete copy is never half-written."
        ) from error
    found = manifest.get("format")
    if found != expected:
        raise ScoreFileError(f"{source}: this is a {found!r} file, not a {expected!r} file.")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ScoreFileError(
            f"{source}: written by a newer lightning-prune (format version {manifest['format_version']}, "
            f"this library reads up to {FORMAT_VERSION}). Upgrade lightning-prune."
        )
    return arrays, manifest
