"""Score every collector of ``collector_harness.CASES`` in a process started by an outside launcher.

``torchrun`` (or ``srun``) starts every rank itself; Lightning detects that (``TorchElasticEnvironment``,
``SLURMEnvironment``) and only joins the ranks. Each rank saves its scores and the name of the cluster
environment Lightning chose, so a test can check both.
Usage: python tests/cluster_launch_worker.py OUT_DIR DEVICES [CASE,CASE,...]
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
        strategy="ddp",
        max_epochs=EPOCHS,
        callbacks=list(collectors.values()),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(KnownLogitsModel(), train_dataloaders=make_loader())
    values = {name: collector.scores.values for name, collector in collectors.items()}
    environment = type(trainer.strategy.cluster_environment).__name__
    np.savez(os.path.join(out_dir, f"rank{trainer.global_rank}.npz"), environment=np.array(environment), **values)
    if torch.distributed.is_initialized():  # left to interpreter shutdown, gloo can abort ("terminate called")
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
