"""Run every collector of ``collector_harness.CASES`` on 1 or 2 CPU processes and save the scores.

Lightning's DDP launcher re-runs this script for rank 1, so it must be a script, not a test. An outside
launcher (``torchrun``, ``srun``) starts every rank itself and Lightning only joins them; each rank also
saves the name of the cluster environment Lightning chose, so a test can check it.
Usage: python tests/ddp_collectors_worker.py OUT_DIR DEVICES [CASE,CASE,...]
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as pl  # noqa: E402
from collector_harness import CASES, EPOCHS, KnownLogitsModel, make_loader  # noqa: E402


def main() -> None:
    out_dir, devices = sys.argv[1], int(sys.argv[2])
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(CASES)
    torch.set_num_threads(1)
    collectors = {name: CASES[name].make() for name in names}
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
    trainer.fit(KnownLogitsModel(), train_dataloaders=make_loader())
    values = {name: collector.scores.values for name, collector in collectors.items()}
    values.update(  # the label each sample's training predicts, where the collector records it
        {
            f"{name}:predicted_label": collector.scores.extras["predicted_label"]
            for name, collector in collectors.items()
            if collector.records_predictions
        }
    )
    environment = type(trainer.strategy.cluster_environment).__name__
    np.savez(os.path.join(out_dir, f"rank{trainer.global_rank}.npz"), environment=np.array(environment), **values)
    if torch.distributed.is_initialized():  # left to interpreter shutdown, gloo can abort ("terminate called")
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
