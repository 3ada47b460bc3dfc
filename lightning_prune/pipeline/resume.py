"""A scoring run that resumes where it stopped: a checkpoint every epoch, kept until its scores are written.

A scoring run on CIFAR takes hours; a crash, a preemption or Ctrl-C must not send it back to epoch 0.
Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` writes the model, the optimiser, the
loops and every callback's state (the collectors keep theirs in ``state_dict``) into
``RUN/checkpoints/scoring-Eep/`` after each epoch; a re-run passes it as ``ckpt_path``. Two things a
checkpoint does not hold are added here:

* which collectors it was made with (``identity.json``): a collector joining a resumed run would start
  with no history of the epochs before, so a checkpoint of other collectors or settings is discarded
  and the run starts over;
* the global random state (:class:`GlobalRandomState`): the data loader's shuffling draws from it, so
  without it every epoch after the resume would see another order than the uninterrupted run did, and
  the scores would differ.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from lightning_prune.pipeline.run_dir import read_json
from lightning_prune.selection.files import write_text_atomic

IDENTITY_FILE = "identity.json"
_EPOCH_FILE = re.compile(r"epoch=(\d+)\.ckpt")


class GlobalRandomState(pl.Callback):
    """Saves Python's, NumPy's and torch's (CPU and CUDA) global random state in the checkpoint and
    restores it on resume, so the epochs after a resume draw what the uninterrupted run drew."""

    @override
    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
        python_version, python_state, python_gauss = random.getstate()
        return {
            "python": [python_version, list(python_state), python_gauss],
            "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, gauss],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, state, gauss = state_dict["python"]
        random.setstate((version, tuple(state), gauss))
        kind, keys, position, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def scoring_checkpoint(folder: Path) -> ModelCheckpoint:
    """A checkpoint after every epoch into ``folder``, the latest only (``epoch=K.ckpt``: K+1 epochs done)."""
    return ModelCheckpoint(
        dirpath=folder, filename="{epoch}", save_top_k=1, every_n_epochs=1, enable_version_counter=False
    )


def resumable_checkpoint(folder: Path, identity: dict[str, Any]) -> tuple[Path, int] | None:
    """The checkpoint to resume from and the epochs it holds, if ``folder`` has one made with ``identity``.

    A folder of another identity is emptied and ``identity`` recorded in it (rank 0 only: under DDP
    every rank decides alike, from the same files).
    """
    canonical = json.loads(json.dumps(identity, sort_keys=True, default=str))
    checkpoints = sorted(folder.glob("epoch=*.ckpt"), key=lambda path: _epochs_done(path))
    if checkpoints and read_json(folder / IDENTITY_FILE) == canonical:
        return checkpoints[-1], _epochs_done(checkpoints[-1])
    if _rank() == 0:
        shutil.rmtree(folder, ignore_errors=True)
        write_text_atomic(folder / IDENTITY_FILE, json.dumps(canonical, indent=2, sort_keys=True))
    return None


def had_checkpoint(folder: Path) -> bool:
    return any(folder.glob("epoch=*.ckpt"))


def remove_checkpoints(folder: Path) -> None:
    """Once the scores are written the checkpoint has served (rank 0 only; the others share the files)."""
    if _rank() == 0:
        shutil.rmtree(folder, ignore_errors=True)


def _epochs_done(path: Path) -> int:
    match = _EPOCH_FILE.fullmatch(path.name)
    return int(match.group(1)) + 1 if match else 0


def _rank() -> int:
    return int(getattr(rank_zero_only, "rank", 0))  # set by Lightning per process; the stubs do not declare it
