"""Score a local LitData set with collectors on 1 or 2 CPU processes (LitData splits it over the ranks).

Lightning's DDP launcher re-runs this script for rank 1, so it must be a script, not a test.
Usage: python tests/ddp_litdata_worker.py OUT_DIR DATA_DIR DEVICES CASE,CASE,...
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as pl  # noqa: E402
import litdata  # noqa: E402
from collector_harness import CASES, EPOCHS, KnownLogitsModel  # noqa: E402

import lightning_prune as lp  # noqa: E402
from lightning_prune.integrations.litdata import IndexedStreamingDataset  # noqa: E402


class DictBatchModel(KnownLogitsModel):
    def training_step(self, batch, batch_idx):
        x, _, _ = lp.unpack_batch(batch)
        return {"loss": self.dummy.pow(2).sum(), "logits": self(x)}


def main() -> None:
    out_dir, data_dir, devices, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
    torch.set_num_threads(1)
    train_set = IndexedStreamingDataset(data_dir, shuffle=True)
    # under DDP, len(train_set) is this rank's share: the collectors are told the size of the whole data set
    collectors = {name: CASES[name].make() for name in names}
    for collector in collectors.values():
        collector.num_samples = train_set.full_size
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=EPOCHS,
        callbacks=list(collectors.values()),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    # LitData's loader tells the data set the batch size and workers it splits by
    trainer.fit(DictBatchModel(), train_dataloaders=litdata.StreamingDataLoader(train_set, batch_size=4))
    values = {name: collector.scores.values for name, collector in collectors.items()}
    np.savez(os.path.join(out_dir, f"rank{trainer.global_rank}.npz"), **values)
    if torch.distributed.is_initialized():  # left to interpreter shutdown, gloo can abort ("terminate called")
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
