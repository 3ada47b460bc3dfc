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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from collector_harness import EPOCHS  # noqa: E402
from ddp_infobatch_worker import finish, fit_dynamic  # noqa: E402

import lightning_prune as lp  # noqa: E402

PRUNE_RATIO, SEED = 0.6, 5


def run(out_dir: str, devices: int = 1, crash_epoch: int | None = None, ckpt_path: str | None = None) -> lp.RS2:
    rs2 = lp.RS2(prune_ratio=PRUNE_RATIO, seed=SEED)
    trainer = fit_dynamic(rs2, out_dir, devices, crash_epoch, ckpt_path)
    if trainer is not None:
        finish(
            trainer,
            out_dir,
            served=np.array([rs2.served[e] for e in range(EPOCHS)]),
            fraction_skipped=np.array(rs2.fraction_skipped),
        )
    return rs2


if __name__ == "__main__":
    arguments = sys.argv[1:]
    crash = int(arguments[2]) if len(arguments) > 2 and int(arguments[2]) >= 0 else None
    run(arguments[0], int(arguments[1]), crash, arguments[3] if len(arguments) > 3 else None)
