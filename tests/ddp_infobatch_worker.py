"""Run InfoBatch (or SeTa) over the known-logits model on 1 or 2 CPU processes and record every epoch's batches.

Lightning's DDP launcher re-runs this script for rank 1, so it must be a script, not a test.
Usage: python tests/ddp_infobatch_worker.py [--method=infobatch|seta] OUT_DIR DEVICES [CRASH_EPOCH|-1] [CKPT_PATH]
Writes OUT_DIR/rank{r}_epoch{e}.npz (the indices and weights of that epoch's batches on rank r, in
order) and OUT_DIR/rank{r}.npz (the collected losses, the samples ever seen, the served counts).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as pl  # noqa: E402
from collector_harness import BATCH_SIZE, EPOCHS, KnownLogitsModel, make_dataset  # noqa: E402

import lightning_prune as lp  # noqa: E402

PRUNE_RATIO, DELTA, SEED = 0.5, 0.75, 3
SETA_SETTINGS = {"prune_ratio": 0.3, "num_group": 3, "window_scale": 0.5, "delta": DELTA, "seed": SEED}


class WeightedKnownLogits(KnownLogitsModel):
    """The known-logits model, reading the 4-element batches dynamic pruning serves; its loss is the
    weighted mean InfoBatch checks for (only the dummy parameter moves, so the logits stay known)."""

    def training_step(self, batch, batch_idx):
        return {"loss": (batch[3] * self.dummy.pow(2)).mean(), "logits": self(batch[0])}


class RecordBatches(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.indices: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.indices, self.weights = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.indices.append(batch[2].cpu().numpy())
        self.weights.append(batch[3].cpu().numpy())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        np.savez(
            os.path.join(self.out_dir, f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.npz"),
            indices=np.concatenate(self.indices),
            weights=np.concatenate(self.weights),
            batches=np.array(len(self.indices)),
            num_training_batches=np.array(trainer.num_training_batches),
        )


class CrashAtEpoch(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def make_infobatch() -> lp.InfoBatch:
    return lp.InfoBatch(prune_ratio=PRUNE_RATIO, delta=DELTA, seed=SEED)


def make_seta() -> lp.SeTa:
    return lp.SeTa(**SETA_SETTINGS)


PLANNERS = {"infobatch": make_infobatch, "seta": make_seta}
"""The loss-planned dynamic methods these runs cover (each a subclass of InfoBatch's machinery)."""

TARGETED = {
    "infobatch-target": lambda: lp.InfoBatch(target_saving=0.3, delta=DELTA, seed=SEED),
    "seta-target": lambda: lp.SeTa(target_saving=0.3, num_group=3, window_scale=0.5, delta=DELTA, seed=SEED),
}
"""The same methods asked for a target saving (their plans then depend on the earlier epochs' plans)."""


def fit_dynamic(
    planner, out_dir: str, devices: int = 1, crash_epoch: int | None = None, ckpt_path: str | None = None
) -> pl.Trainer | None:
    """Fit the known-logits model under a dynamic pruning callback, recording every epoch's batches;
    ``None`` when the fit stopped at the simulated crash."""
    torch.set_num_threads(1)
    callbacks: list[pl.Callback] = [planner, RecordBatches(out_dir)]
    checkpointing = crash_epoch is not None or ckpt_path is not None
    if checkpointing:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=out_dir, save_last=True, save_on_train_epoch_end=True))
    if crash_epoch is not None:
        callbacks.append(CrashAtEpoch(crash_epoch))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=EPOCHS,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpointing,
        default_root_dir=out_dir,
    )
    data = pl.LightningDataModule.from_datasets(train_dataset=make_dataset(), batch_size=BATCH_SIZE)
    try:
        trainer.fit(WeightedKnownLogits(), datamodule=planner.wrap(data), ckpt_path=ckpt_path)
    except RuntimeError as error:
        if "simulated crash" not in str(error):
            raise
        return None
    return trainer


def finish(trainer: pl.Trainer, out_dir: str, **arrays) -> None:
    """Write this rank's results and leave the process group (left to interpreter shutdown, gloo can abort)."""
    np.savez(os.path.join(out_dir, f"rank{trainer.global_rank}.npz"), **arrays)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run(
    out_dir: str,
    devices: int = 1,
    crash_epoch: int | None = None,
    ckpt_path: str | None = None,
    method: str = "infobatch",
) -> lp.InfoBatch:
    infobatch = {**PLANNERS, **TARGETED}[method]()
    trainer = fit_dynamic(infobatch, out_dir, devices, crash_epoch, ckpt_path)
    if trainer is None:
        return infobatch
    state = infobatch.state_dict()["buffers"]
    finish(
        trainer,
        out_dir,
        loss=state["loss"].numpy(),
        times_seen=state["times_seen"].numpy(),
        served=np.array([infobatch.served[e] for e in range(EPOCHS)]),
    )
    return infobatch


if __name__ == "__main__":
    arguments = sys.argv[1:]
    chosen = "infobatch"
    if arguments and arguments[0].startswith("--method="):
        chosen = arguments.pop(0).split("=", 1)[1]
    crash = int(arguments[2]) if len(arguments) > 2 and int(arguments[2]) >= 0 else None
    run(arguments[0], int(arguments[1]), crash, arguments[3] if len(arguments) > 3 else None, method=chosen)
