"""What each step of a run costs: samples forwarded in training, epochs and wall time.

Pruning pays off only if the scoring costs less than it saves, so every training of a run is
metered (:class:`CostMeter`, a callback: it reads each batch's size, which needs no host
synchronisation) and the report charges each method the trainings it needed: the scoring run to
every method that reads it, AdaPruner its own mask training per ratio, and the coreset training.
Costs are written next to the artefacts they paid for, in ``RUN/costs/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.data import extract_batch_size

from lightning_prune.pipeline.run_dir import read_json
from lightning_prune.selection.files import write_text_atomic


class CostMeter(pl.Callback):
    """Counts the training samples a fit forwards (all ranks), its epochs and its wall time."""

    def __init__(self) -> None:
        self.samples = 0
        self.epochs = 0
        self.seconds = 0.0
        self._start = 0.0
        self._local = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._local = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._local += extract_batch_size(batch)  # Lightning's own reading of a batch: shapes only, no device sync

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        local = torch.tensor(float(self._local), device=pl_module.device)
        total = trainer.strategy.reduce(local, reduce_op="sum") if trainer.world_size > 1 else local
        self.samples = int(round(float(total)))
        self.epochs = int(trainer.current_epoch)
        self.seconds = round(time.perf_counter() - self._start, 2)

    def record(self) -> dict[str, Any]:
        return {"samples_forwarded": self.samples, "epochs": self.epochs, "seconds": self.seconds}


def cost_path(run_dir: Path, name: str) -> Path:
    return run_dir / "costs" / f"{name}.json"


def write_cost(run_dir: Path, name: str, record: dict[str, Any]) -> None:
    write_text_atomic(cost_path(run_dir, name), json.dumps(record, indent=2))


def read_cost(run_dir: Path, name: str) -> dict[str, Any] | None:
    """A recorded cost, or ``None`` (not recorded: a run made before costs were, or a damaged file)."""
    record = read_json(cost_path(run_dir, name))
    return record if record is not None and "samples_forwarded" in record else None


def add_costs(*records: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sum of several costs; ``None`` when any of them is unknown."""
    if any(record is None for record in records):
        return None
    return {
        "samples_forwarded": sum(int(r["samples_forwarded"]) for r in records if r),
        "seconds": round(sum(float(r["seconds"]) for r in records if r), 2),
    }
