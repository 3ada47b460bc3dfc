"""A run directory's integrity: one process at a time, one set-up per directory, damaged files read as missing.

Everything a run writes is resumable, so the directory itself must say which run it holds
(``run.json``), refuse a second process (an exclusive ``flock``, POSIX only) and a changed set-up (naming each
setting that differs), and treat a file a killed process left half-written as not there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lightning_prune.distributed import distributed_ready
from lightning_prune.pipeline.ranks import rank, rank_zero_decides
from lightning_prune.selection.files import write_text_atomic

try:  # POSIX only (Linux, macOS): what the lock is built on
    import fcntl
except ImportError:  # pragma: no cover -- Windows
    fcntl = None  # type: ignore[assignment]

ARTEFACT_FOLDERS = ("scores", "selections", "cells")


class RunDirectoryBusy(RuntimeError):
    """Another process holds the run directory's lock."""


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing, truncated or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``["key.sub: old -> new", ...]`` for every leaf setting that differs between two descriptions."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            found += differences(old.get(key, "<unset>"), new.get(key, "<unset>"), f"{prefix}{key}.")
        return found
    if json.dumps(old, sort_keys=True, default=str) == json.dumps(new, sort_keys=True, default=str):
        return []
    return [f"{prefix.rstrip('.')}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` exclusively (one ``lightning-prune`` process at a time), and clean the temporary
    files a killed process left behind.

    Only rank 0 takes the lock: the other ranks are its own processes, re-running the same command.
    When the ranks were launched together (``torchrun``, ``srun``: see :mod:`~lightning_prune.pipeline.ranks`)
    they wait for rank 0 to hold the lock and to have cleaned, and fail with its error when the
    directory is busy, rather than working in a directory another run holds."""
    with contextlib.ExitStack() as held:
        if distributed_ready() or rank() == 0:
            rank_zero_decides(lambda: held.enter_context(_exclusive(run_dir)))
        yield


@contextlib.contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    if fcntl is None:
        raise RuntimeError(
            "The run directory's lock needs fcntl, which this platform lacks: lightning-prune's pipeline commands "
            "run on Linux and macOS. The Python API (collectors, select, PrunedDataModule) does not need it."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryBusy(
                f"{run_dir} is in use by another lightning-prune process. Wait for it to finish (re-running then "
                "resumes), or choose another output_dir."
            ) from None
        for stale in run_dir.rglob(".*.tmp"):  # atomic writes of a killed process
            stale.unlink(missing_ok=True)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def has_artefacts(run_dir: Path) -> bool:
    """Whether any step of a run has finished in ``run_dir``."""
    return any(any((run_dir / part).glob("*")) for part in ARTEFACT_FOLDERS)


def check_identity(run_dir: Path, description: dict[str, Any], log: Callable[[str], None]) -> None:
    """Record what the run is in ``run.json``, or check that a re-run is the same run (and say what differs)."""
    marker = run_dir / "run.json"
    canonical = json.loads(json.dumps(description, default=str))
    fingerprint = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]
    record = json.dumps({"fingerprint": fingerprint, "description": canonical}, indent=2, sort_keys=True)
    if not marker.exists():
        write_text_atomic(marker, record)
        return
    previous = read_json(marker)
    if previous is None:
        raise ValueError(
            f"{marker} is unreadable (damaged or not JSON). Delete it to resume with the present settings (score "
            "and selection files made with other method settings are still refused), or choose another output_dir."
        )
    if previous.get("fingerprint") == fingerprint:
        log(f"Resuming the run in {run_dir}: finished steps are skipped.")
        return
    if not has_artefacts(run_dir):  # an earlier attempt failed before it produced anything
        log(f"{run_dir} holds no results yet; starting with the present settings.")
        write_text_atomic(marker, record)
        return
    changed = differences(previous.get("description", {}), canonical)
    raise ValueError(
        f"{run_dir} holds a run with other settings ({'; '.join(changed) or 'see ' + str(marker)}). Resuming would "
        "mix results of two set-ups: choose another output_dir, or delete that directory to start over."
    )
