"""Progress of a long training inside a run: a line per epoch at most every ``interval`` seconds.

A scoring run on CIFAR takes hours; one line when it ends is not enough to know it is alive. The
line goes through the run's ``log`` (rank 0 only), so it is no part of the run's identity and adds
no synchronisation: it reads the epoch counter and the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning.pytorch as pl


class EpochProgress(pl.Callback):
    """Logs ``"{prefix} epoch e/E (t s, ETA s)"`` after the first epoch and then at most every ``interval`` s."""

    def __init__(self, prefix: str, log: Callable[[str], None], interval: float = 30.0) -> None:
        self.prefix = prefix
        self._print = log
        self.interval = interval
        self._start = 0.0
        self._last = float("-inf")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._last = float("-inf")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.perf_counter()
        done, total = trainer.current_epoch + 1, trainer.max_epochs
        if now - self._last < self.interval and done != 1:
            return
        self._last = now
        elapsed = now - self._start
        eta = f", ETA {elapsed / done * (total - done):.0f} s" if total and total > 0 else ""
        self._print(f"{self.prefix} epoch {done}/{total if total and total > 0 else '?'} ({elapsed:.0f} s{eta})")
