"""Score an ``IndexedStreamingDataset`` on 1 or 2 CPU processes and save each rank's scores and samples seen.

The data set is built before ``Trainer.fit`` starts the process group, as a script builds it: the case
in which LitData alone reads world size 1 on every rank. Lightning's DDP launcher re-runs this script
for rank 1, so it must be a script, not a test.
Usage: python tests/ddp_litdata_worker.py OUT_DIR DEVICES DATA_DIR {indexed,plain,keep_last}
(plain: a litdata.StreamingDataset, which the collectors refuse; keep_last: drop_last=False, refused where the
ranks' shares make different numbers of batches)
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as pl  # noqa: E402
import litdata  # noqa: E402
from collector_harness import CASES, EPOCHS, DictBatchModel, SeenIndices  # noqa: E402

from lightning_prune.integrations.litdata import IndexedStreamingDataset  # noqa: E402

NAMES = ("tdds", "forgetting")


def main() -> None:
    out_dir, devices, data_dir, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    if kind == "plain":
        dataset = litdata.StreamingDataset(data_dir, shuffle=True)
    else:
        dataset = IndexedStreamingDataset(
            data_dir, shuffle=True, **({"drop_last": False} if kind == "keep_last" else {})
        )
    collectors = {name: CASES[name].make() for name in NAMES}
    seen = SeenIndices()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=EPOCHS,
        callbacks=[*collectors.values(), seen],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    loader = litdata.StreamingDataLoader(dataset, batch_size=4)
    try:
        trainer.fit(DictBatchModel(), train_dataloaders=loader)
    except ValueError as error:  # a refusal, raised on every rank alike
        with open(os.path.join(out_dir, f"rank{trainer.global_rank}.error"), "w") as file:
            file.write(str(error))
        raise
    values = {name: collector.scores.values for name, collector in collectors.items()}
    np.savez(os.path.join(out_dir, f"rank{trainer.global_rank}.npz"), seen=np.array(seen.seen), **values)
    if torch.distributed.is_initialized():  # left to interpreter shutdown, gloo can abort ("terminate called")
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
