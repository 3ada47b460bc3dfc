"""Run RS2 over the known-logits model on 1 or 2 CPU processes and record every epoch's batches.

Lightning's DDP launcher re-runs this script for rank 1, so it must be a script, not a test.
Usage: python tests/ddp_rs2_worker.py OUT_DIR DEVICES [CRASH_EPOCH|-1] [CKPT_PATH]
Writes OUT_DIR/rank{r}_epoch{e}.npz (the indices and weights of that epoch's batches on rank r) and
OUT_DIR/rank{r}.npz (the served counts RS2 recorded).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as pl  # noqa: E402
from collector_harness import BATCH_SIZE, EPOCHS, make_dataset  # noqa: E402
from ddp_infobatch_worker import CrashAtEpoch, RecordBatches, WeightedKnownLogits  # noqa: E402

import lightning_prune as lp  # noqa: E402

PRUNE_RATIO, SEED = 0.6, 5


def run(out_dir: str, devices: int = 1, crash_epoch: int | None = None, ckpt_path: str | None = None) -> lp.RS2:
    torch.set_num_threads(1)
    rs2 = lp.RS2(prune_ratio=PRUNE_RATIO, seed=SEED)
    callbacks: list[pl.Callback] = [rs2, RecordBatches(out_dir)]
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
        trainer.fit(WeightedKnownLogits(), datamodule=rs2.wrap(data), ckpt_path=ckpt_path)
    except RuntimeError as error:
        if "simulated crash" not in str(error):
            raise
        return rs2
    np.savez(
        os.path.join(out_dir, f"rank{trainer.global_rank}.npz"),
        served=np.array([rs2.served[e] for e in range(EPOCHS)]),
        fraction_skipped=np.array(rs2.fraction_skipped),
    )
    if torch.distributed.is_initialized():  # left to interpreter shutdown, gloo can abort ("terminate called")
        torch.distributed.destroy_process_group()
    return rs2


if __name__ == "__main__":
    arguments = sys.argv[1:]
    crash = int(arguments[2]) if len(arguments) > 2 and int(arguments[2]) >= 0 else None
    run(arguments[0], int(arguments[1]), crash, arguments[3] if len(arguments) > 3 else None)
