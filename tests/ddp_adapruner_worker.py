"""Two-process DDP run of AdaPruner on CPU (gloo), driven by tests/test_adapruner.py.

Usage: ``python tests/ddp_adapruner_worker.py OUT_DIR [unseen]``. Lightning's DDP launcher starts this
script again for rank 1; each rank writes ``OUT_DIR/rank{r}.npz`` with its final mask, the indices it
was dealt in the first epoch, its selection and label fingerprint, so the test can check that every
rank ends with the same mask although each trained on different samples.

With ``unseen``, each rank streams its own half of 400 samples to a mask for 500 and writes the
error AdaPruner raised to ``OUT_DIR/rank{r}_error.txt``: both ranks must refuse, together.
"""

from __future__ import annotations

import sys
import warnings
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import DDPStrategy
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lightning_prune.adapruner import AdaPruner
from lightning_prune.data import IndexedDataset

NUM_TRAIN = 800


class RecordIndices(L.Callback):
    """Keeps the sample indices this rank trained on in the first epoch."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            self.seen.append(batch[2].cpu().numpy())


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    L.seed_everything(0, verbose=False)
    features, labels = load_digits(return_X_y=True)
    x = torch.tensor(features / 16.0, dtype=torch.float32)
    y = torch.tensor(labels)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train_idx, val_idx = order[:NUM_TRAIN], order[NUM_TRAIN : NUM_TRAIN + 200]
    train_set = IndexedDataset(TensorDataset(x[train_idx], y[train_idx]))
    val_set = TensorDataset(x[val_idx], y[val_idx])

    backbone = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    pruner = AdaPruner(backbone, num_samples=NUM_TRAIN, keep_ratio=0.6, warmup_epochs=1, lr=0.05)
    recorder = RecordIndices()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=6,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        callbacks=[recorder],
    )
    trainer.fit(
        pruner,
        DataLoader(train_set, batch_size=32, shuffle=True),
        DataLoader(val_set, batch_size=100),
    )
    selection = pruner.selection()
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        out_dir / f"rank{trainer.global_rank}.npz",
        mask=pruner.mask.detach().cpu().numpy(),
        seen=np.concatenate(recorder.seen),
        indices=selection.indices,
        fingerprint=np.array(selection.label_fingerprint or ""),
        expected_fingerprint=np.array(_fingerprint(y[train_idx].numpy())),
        alpha=np.array(pruner.alpha),
        frozen=np.array(pruner.frozen),
    )
    if torch.distributed.is_initialized():  # left to interpreter shutdown, gloo can abort ("terminate called")
        torch.distributed.destroy_process_group()


class RankShard(IterableDataset):
    """Rank r streams the indexed samples r, r + 2, r + 4, ... (no length, so no size check sees it)."""

    def __init__(self, data: IndexedDataset) -> None:
        self.data = data

    def __iter__(self):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return (self.data[i] for i in range(rank, len(self.data), 2))


def main_unseen(out_dir: Path) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    L.seed_everything(0, verbose=False)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 4, generator=generator)
    data = IndexedDataset(TensorDataset(x, (x[:, 0] > 0).long()))
    pruner = AdaPruner(nn.Linear(4, 2), num_samples=500, keep_ratio=0.5)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        # A rank that raised alone would leave the other waiting in a collective: fail in a minute.
        strategy=DDPStrategy(timeout=timedelta(seconds=60)),
        max_epochs=2,
        max_steps=100,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    )
    try:
        trainer.fit(pruner, DataLoader(RankShard(data), batch_size=25))
    except ValueError as error:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"rank{trainer.global_rank}_error.txt").write_text(str(error))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _fingerprint(labels: np.ndarray) -> str:
    from lightning_prune.selection.files import label_fingerprint

    return label_fingerprint(labels) or ""


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["unseen"]):
        raise SystemExit("usage: python tests/ddp_adapruner_worker.py OUT_DIR [unseen]")
    (main_unseen if sys.argv[2:] else main)(Path(sys.argv[1]))
