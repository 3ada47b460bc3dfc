"""Train on a saved selection of the digits training set and record what every rank saw.

Lightning's DDP launcher re-runs this script for rank 1, so it must be a script, not a test.
Usage: python tests/ddp_pruned_worker.py OUT_DIR SELECTION_PATH DEVICES EPOCHS WEIGHTED(0|1)
Writes OUT_DIR/rank{r}_epoch{e}.npz with the indices (and weights) of every batch of that epoch,
in order, and the class name of the sampler the trainer actually used.
"""

import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lightning.pytorch as pl  # noqa: E402

from lightning_prune.data import DigitsDataModule, PrunedDataModule  # noqa: E402
from lightning_prune.models import Classifier  # noqa: E402


class RecordBatches(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.indices: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.indices, self.weights = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.indices.append(batch[2].cpu().numpy())
        if len(batch) > 3:
            self.weights.append(batch[3].cpu().numpy())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        np.savez(
            os.path.join(self.out_dir, f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.npz"),
            indices=np.concatenate(self.indices),
            weights=np.concatenate(self.weights) if self.weights else np.zeros(0),
            sampler=np.array(type(sampler).__name__),
            world_size=np.array(trainer.world_size),
        )


def run(out_dir: str, selection_path: str, devices: int, epochs: int, weighted: bool) -> None:
    torch.set_num_threads(1)
    datamodule = PrunedDataModule(DigitsDataModule(batch_size=16), selection=selection_path, weighted=weighted, seed=7)
    model = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), lr=0.05)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=epochs,
        callbacks=[RecordBatches(out_dir)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=datamodule)
    if torch.distributed.is_initialized():  # left to interpreter shutdown, gloo can abort ("terminate called")
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    out, path, n_devices, n_epochs, weighted_flag = sys.argv[1:6]
    run(out, path, int(n_devices), int(n_epochs), weighted_flag == "1")
