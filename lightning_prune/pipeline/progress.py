"""Progress of a long training inside a run: a line per epoch at most every ``interval`` seconds.

A scoring run on CIFAR takes hours; one line when it ends is not enough to know it is alive, while
the many short trainings of a small study need no more than their one line each. The
line goes through the run's ``log`` (rank 0 only), so it is no part of the run's identity and adds
no synchronisation: it reads the epoch counter and the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning.pytorch as pl
from typing_extensions import override

PROGRESS_INTERVAL_S = 30.0
"""Seconds between two progress lines of one training; a shorter training prints none."""


class EpochProgress(pl.Callback):
    """Logs ``"{prefix} epoch e/E (t s, ETA s)"`` at an epoch's end, at most every ``interval`` seconds."""

    def __init__(self, prefix: str, log: Callable[[str], None], interval: float | None = None) -> None:
        self.prefix = prefix
        self._print = log
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self._start = 0.0
        self._last = 0.0

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.perf_counter()
        done, total = trainer.current_epoch + 1, trainer.max_epochs
        if now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self._start
        eta = f", ETA {elapsed / done * (total - done):.0f} s" if total and total > 0 else ""
        self._print(f"{self.prefix} epoch {done}/{total if total and total > 0 else '?'} ({elapsed:.0f} s{eta})")
