"""The GPU path in one script (at most 8 minutes on one GPU): what collectors cost and what InfoBatch saves.

On a CIFAR-shaped ResNet-18 (3x3 stem, no max-pool) over a synthetic 32x32 stream with learnable labels
(a fixed random class template plus noise), trained with ``precision="16-mixed"`` on one GPU:

1. **Collector overhead**: epochs with and without TDDS + Forgetting attached, alternating the two in
   this one run, and the ratio of the median epoch times (the first epoch of each fit, which warms up
   cuDNN and the allocator, is left out). Each epoch is timed between two CUDA synchronisations.
2. **Dynamic pruning**: fits with and without ``lp.InfoBatch`` (prune_ratio 0.5), alternating, and the
   ratios of the samples forwarded and of the wall time per fit.

It prints the GPU, the versions and every figure, and with ``--json PATH`` writes them for the README's
benchmark table. ``--smoke`` runs the same code on a CPU at a toy size in well under a minute (float32,
since ``16-mixed`` needs CUDA): CI runs it so that the script keeps working between GPU loans.

Run: python benchmarks/gpu_check.py [--smoke] [--json PATH] [--samples 50000] [--repeats 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning
import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_prune as lp
from lightning_prune.pipeline.cost import CostMeter


@dataclass
class Settings:
    accelerator: str
    precision: str
    samples: int
    batch_size: int
    image_size: int
    repeats: int  # alternating pairs of fits, per part
    overhead_epochs: int
    infobatch_epochs: int
    prune_ratio: float = 0.5
    delta: float = 0.875


GPU = Settings(
    "gpu", "16-mixed", samples=50_000, batch_size=128, image_size=32, repeats=2, overhead_epochs=3, infobatch_epochs=6
)
SMOKE = Settings(
    "cpu", "32-true", samples=32, batch_size=16, image_size=8, repeats=1, overhead_epochs=3, infobatch_epochs=3
)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the GPU's queued work belongs to the epoch that queued it


class _EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _synchronize()
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _synchronize()
        self.times.append(time.perf_counter() - self._start)


class _Stream(pl.LightningDataModule):
    """``samples`` images of ``size`` x ``size``: a class template plus noise, so that the labels can be learned."""

    def __init__(self, samples: int, batch_size: int, size: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 10, (samples,), generator=generator)
        templates = torch.randn(10, 3, size, size, generator=generator)
        images = 0.5 * templates[labels] + torch.randn(samples, 3, size, size, generator=generator)
        self.train_set = lp.IndexedDataset(TensorDataset(images, labels))
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=True, pin_memory=torch.cuda.is_available()
        )


def _fit(
    settings: Settings, epochs: int, callbacks: list[pl.Callback], data: pl.LightningDataModule, seed: int
) -> float:
    pl.seed_everything(seed, verbose=False)
    model = lp.Classifier(lp.cifar_resnet18(num_classes=10), lr=0.05, weighted_loss="mean")
    trainer = pl.Trainer(
        accelerator=settings.accelerator,
        devices=1,
        precision=settings.precision,
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    _synchronize()
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    _synchronize()
    return time.perf_counter() - start


@dataclass
class Overhead:
    plain_epochs: list[float] = field(default_factory=list)
    collected_epochs: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.collected_epochs) / statistics.median(self.plain_epochs)


def collector_overhead(settings: Settings, data: pl.LightningDataModule) -> Overhead:
    result = Overhead()
    for repeat in range(settings.repeats):
        for attach in (False, True):  # alternating, so that drift in the machine's load hits both alike
            timer = _EpochTimer()
            collectors = [lp.TDDS(trajectory=settings.overhead_epochs, window=3), lp.Forgetting()] if attach else []
            _fit(settings, settings.overhead_epochs, [*collectors, timer], data, seed=repeat)
            if attach and not all(np.isfinite(collector.scores.values).all() for collector in collectors):
                raise RuntimeError(f"a collector's scores are not finite under precision {settings.precision}")
            (result.collected_epochs if attach else result.plain_epochs).extend(timer.times[1:])
    return result


@dataclass
class Savings:
    full_seconds: list[float] = field(default_factory=list)
    infobatch_seconds: list[float] = field(default_factory=list)
    full_samples: list[int] = field(default_factory=list)
    infobatch_samples: list[int] = field(default_factory=list)

    @property
    def time_ratio(self) -> float:
        return statistics.fmean(self.infobatch_seconds) / statistics.fmean(self.full_seconds)

    @property
    def samples_ratio(self) -> float:
        return statistics.fmean(self.infobatch_samples) / statistics.fmean(self.full_samples)


def infobatch_savings(settings: Settings, data: pl.LightningDataModule) -> Savings:
    result = Savings()
    for seed in range(settings.repeats):
        for dynamic in (False, True):
            meter, callbacks, served = CostMeter(), [], data
            if dynamic:
                infobatch = lp.InfoBatch(prune_ratio=settings.prune_ratio, delta=settings.delta, seed=seed)
                callbacks, served = [infobatch], infobatch.wrap(data)
            seconds = _fit(settings, settings.infobatch_epochs, [meter, *callbacks], served, seed)
            (result.infobatch_seconds if dynamic else result.full_seconds).append(seconds)
            (result.infobatch_samples if dynamic else result.full_samples).append(meter.samples)
    return result


def machine() -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": lightning.__version__,
        "lightning_prune": lp.__version__,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a toy size on the CPU, in float32 (what CI runs)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--samples", type=int, default=None, help=f"stream size (default {GPU.samples:,})")
    parser.add_argument("--repeats", type=int, default=None, help=f"alternating pairs per part (default {GPU.repeats})")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit of the overhead part")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else GPU
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device is visible: run on a GPU, or add --smoke to check the script on a CPU.")
    overrides = {"samples": args.samples, "repeats": args.repeats, "overhead_epochs": args.epochs}
    settings = Settings(**{**asdict(settings), **{key: value for key, value in overrides.items() if value is not None}})
    if settings.overhead_epochs < 3:
        parser.error("--epochs must be >= 3: TDDS needs 3 epochs, and the first of every fit is left out as warm-up.")
    for name in (
        "lightning.pytorch",
        "lightning.fabric",
        "lightning",
    ):  # one Trainer banner per fit would bury the figures
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings(
        "ignore", message=r".*(does not have many workers|treespec|validation_step|logging interval).*"
    )
    start = time.perf_counter()
    info = machine()
    print(
        f"{info['date']}  {info['device']}  torch {info['torch']} (CUDA {info['cuda']})  lightning {info['lightning']}"
    )
    print(
        f"ResNet-18 (CIFAR stem), {settings.samples:,} synthetic {settings.image_size}x{settings.image_size} images, "
        f"batch {settings.batch_size}, precision {settings.precision}",
        flush=True,
    )
    data = _Stream(settings.samples, settings.batch_size, settings.image_size)

    overhead = collector_overhead(settings, data)
    print(f"1. TDDS + Forgetting, {settings.repeats} alternating pairs of {settings.overhead_epochs}-epoch fits:")
    print(f"   median epoch without collectors: {statistics.median(overhead.plain_epochs):.3f} s")
    print(f"   median epoch with collectors:    {statistics.median(overhead.collected_epochs):.3f} s")
    print(f"   overhead ratio (with / without): {overhead.ratio:.3f}")

    savings = infobatch_savings(settings, data)
    print(
        f"2. InfoBatch prune_ratio={settings.prune_ratio} delta={settings.delta}, {settings.repeats} alternating pairs of "
        f"{settings.infobatch_epochs}-epoch fits:"
    )
    print(f"   samples forwarded, infobatch / full: {savings.samples_ratio:.3f}")
    print(
        f"   wall time per fit: {statistics.fmean(savings.infobatch_seconds):.2f} s vs "
        f"{statistics.fmean(savings.full_seconds):.2f} s, ratio {savings.time_ratio:.3f}"
    )
    elapsed = time.perf_counter() - start
    print(f"Total: {elapsed:.0f} s")
    figures = {
        **info,
        "settings": asdict(settings),
        "collector_overhead": {**asdict(overhead), "ratio": overhead.ratio},
        "infobatch": {**asdict(savings), "time_ratio": savings.time_ratio, "samples_ratio": savings.samples_ratio},
        "seconds": elapsed,
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return figures


if __name__ == "__main__":
    main()
