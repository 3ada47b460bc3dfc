"""Fit InfoBatch or RS2 over a known per-sample loss on 2 CPU processes, optionally stopping after a
mid-epoch checkpoint or resuming from one, and record every rank's batches.

Lightning's DDP launcher re-runs this script for rank 1, so it must be a script, not a test.
Usage: python tests/ddp_dynamic_resume_worker.py OUT_DIR METHOD MODE   (MODE: full | crash | resume)
Writes OUT_DIR/MODE_rank{r}.json: the (epoch, indices, weights) of every batch rank r trained.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as pl  # noqa: E402
from test_dynamic_lightning_features import PLANNERS, KnownLoss, Record, data  # noqa: E402

SAVE_AT = 5  # 96 samples, 2 ranks, batches of 16: 3 batches per rank in a full epoch, fewer when pruned


class StopAtStep(pl.Callback):
    """Ends the fit inside an epoch, on every rank alike (an exception under DDP kills the other ranks)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            trainer.should_stop = True


def main(out_dir: str, method: str, mode: str) -> None:
    torch.set_num_threads(1)
    planner, record = PLANNERS[method](), Record()
    callbacks: list[pl.Callback] = [planner, record]
    if mode == "crash":
        callbacks += [
            pl.callbacks.ModelCheckpoint(dirpath=out_dir, every_n_train_steps=SAVE_AT, save_top_k=1),
            StopAtStep(SAVE_AT + 1),
        ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=5,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=mode == "crash",
        default_root_dir=out_dir,
    )
    ckpt = None
    if mode == "resume":
        (ckpt,) = [os.path.join(out_dir, name) for name in os.listdir(out_dir) if name.endswith(".ckpt")]
    trainer.fit(KnownLoss(), datamodule=planner.wrap(data()), ckpt_path=ckpt)
    rows = [row for row in record.rows if mode != "crash" or row[1] <= SAVE_AT]
    with open(os.path.join(out_dir, f"{mode}_rank{trainer.global_rank}.json"), "w") as file:
        json.dump(rows, file)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
