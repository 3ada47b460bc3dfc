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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.data import extract_batch_size
from typing_extensions import override

from lightning_prune.pipeline.run_dir import read_json
from lightning_prune.selection.files import write_text_atomic


class CostMeter(pl.Callback):
    """Counts the training samples a fit forwards (all ranks), its epochs and its wall time.

    Its count is checkpoint state, so a fit resumed from a checkpoint costs what the uninterrupted fit
    would have (the time lost to the interruption aside). Every rank is dealt the same number of samples
    per epoch (the samplers pad), so the rank-0 count a checkpoint holds is each rank's count.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.epochs = 0
        self.seconds = 0.0
        self._start = 0.0
        self._local = 0
        self._earlier_seconds = 0.0

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # before Lightning restores a checkpoint's state into it: a reused meter starts at 0
            self._local, self._earlier_seconds = 0, 0.0

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._local += extract_batch_size(batch)  # Lightning's own reading of a batch: shapes only, no device sync

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        local = torch.tensor(float(self._local), device=pl_module.device)
        total = trainer.strategy.reduce(local, reduce_op="sum") if trainer.world_size > 1 else local
        self.samples = int(round(float(total)))
        self.epochs = int(trainer.current_epoch)
        self.seconds = round(self._earlier_seconds + time.perf_counter() - self._start, 2)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"local_samples": self._local, "seconds": self._earlier_seconds + time.perf_counter() - self._start}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._local = int(state_dict["local_samples"])
        self._earlier_seconds = float(state_dict["seconds"])

    def record(self) -> dict[str, Any]:
        return {"samples_forwarded": self.samples, "epochs": self.epochs, "seconds": self.seconds}


@dataclass(frozen=True)
class CostFile:
    """A recorded cost: ``RUN/costs/NAME.json``, and the artefacts whose making it measured.

    Deleting ``paid_for`` makes the run do that step again, and so measure its cost again: what a
    missing or damaged cost file's message tells the user to do.
    """

    path: Path
    paid_for: tuple[Path, ...]


def cost_path(run_dir: Path, name: str) -> Path:
    return run_dir / "costs" / f"{name}.json"


def write_cost(cost: CostFile, record: dict[str, Any]) -> None:
    write_text_atomic(cost.path, json.dumps(record, indent=2))


def read_cost(cost: CostFile) -> dict[str, Any]:
    """A recorded cost; a missing, unreadable or negative one is refused, naming how to measure it again."""
    redo = (
        f"Delete {' and '.join(str(path) for path in cost.paid_for)} and re-run to redo that step and record its "
        "cost again (every method is charged what its selection cost)."
    )
    if not cost.path.exists():
        raise ValueError(f"{cost.path} is missing: the run has the artefacts it paid for but not their cost. {redo}")
    record = read_json(cost.path)
    if record is None or not all(isinstance(record.get(key), int | float) for key in ("samples_forwarded", "seconds")):
        raise ValueError(f"{cost.path} is unreadable (damaged, truncated or not a cost record). {redo}")
    if record["samples_forwarded"] < 0 or record["seconds"] < 0:
        raise ValueError(
            f"{cost.path} records a negative cost ({record['samples_forwarded']} samples forwarded, "
            f"{record['seconds']} s): it was not written by this run. {redo}"
        )
    return record


def forward_flops(model: torch.nn.Module, inputs: Any) -> int | None:
    """The FLOPs of one forward pass of ``model`` (in eval mode, no gradients) on ``inputs``, as torch's
    ``FlopCounterMode`` counts them (matrix products and convolutions); ``None`` where the forward fails."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(inputs)
    except Exception:  # noqa: BLE001 -- any model: one whose forward does not take the batch is not measured
        return None
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def proxy_cost(record: dict[str, Any], flops_ratio: float) -> dict[str, Any]:
    """A proxy's training cost in the model's currency: its samples forwarded times ``flops_ratio`` (the
    proxy's forward FLOPs over the model's), with what it forwarded itself and the ratio beside it."""
    return {
        **record,
        "samples_forwarded": int(round(record["samples_forwarded"] * flops_ratio)),
        "proxy_samples_forwarded": record["samples_forwarded"],
        "proxy_flops_ratio": round(float(flops_ratio), 6),
    }


def add_costs(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several costs (zero for none)."""
    return {
        "samples_forwarded": sum(int(r["samples_forwarded"]) for r in records),
        "seconds": round(sum(float(r["seconds"]) for r in records), 2),
    }
