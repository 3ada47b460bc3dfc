"""Every dynamic method at target savings, against full data and the full data trained for as many samples.

For each data set and seed this trains, alternating in one run so that machine load hits all alike:

* ``full``: the full data for ``--epochs`` epochs;
* for each target saving ``s`` (``--targets``, default 30/40/50/60%):
  ``full-budget``: the full data for the optimiser steps of ``(1 - s) N`` samples per epoch
  (:class:`~lightning_prune.pipeline.budget.StepBudget`, the equal-cost frontier of the pipeline's
  ``full-budget`` baseline), and every dynamic method (InfoBatch, SeTa, RS2) with ``target_saving=s``.

It prints, per row and as the mean over seeds: the fraction of sample presentations skipped, the samples
forwarded, the wall time per fit, the validation accuracy (the split to pick settings on) and the test
accuracy, with its difference to ``full`` and to ``full-budget`` at the same target. Per data set it then
names the largest target each method reaches within 0.3 points of full data *on validation* (the pick,
never made on test) and gives that pick's test figures.

Data sets (``--data``): the three of the study (``digits``: lp.DigitsDataModule, SmallCNN width 16,
batch 64, lr 0.05; ``noisy``: the same with ``label_noise=0.2``; ``tabular``: lp.TabularDataModule with a
2-layer MLP, batch 128) for ``--epochs`` (20, the study's ``train_epochs``), and ``stream``: a CIFAR-shaped
ResNet-18 (3x3 stem, no max-pool) on a synthetic 32x32 stream with learnable labels, where the forward
and backward passes dominate the time, so the wall-time ratio shows what skipping samples buys.

Settings fixed up front, not tuned here: every method's ``delta`` is the papers' 0.875; InfoBatch keeps
its default weight bound ``max_weight=2`` (the paper's ratio 0.5); SeTa uses the
official CIFAR script's ``num_group=5, window_scale=0.9`` (its default 10 groups with a window of half of
them skip 50% of each windowed epoch on their own, above a 30% target).

Run: python benchmarks/dynamic_savings.py [--quick] [--data digits noisy tabular stream] [--seeds 0 1 2]
       [--targets 0.3 0.4 0.5 0.6] [--methods infobatch seta rs2] [--threads N]
``--quick``: one seed, target 0.5, 10 epochs, a 128-sample stream for 8 epochs (a few minutes per data set).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_prune as lp
from lightning_prune.pipeline.budget import StepBudget
from lightning_prune.pipeline.cost import CostMeter
from lightning_prune.selection.strategies import num_to_keep

DYNAMIC: dict[str, Callable[[float, int], pl.Callback]] = {
    "infobatch": lambda target, seed: lp.InfoBatch(target_saving=target, seed=seed),
    "seta": lambda target, seed: lp.SeTa(target_saving=target, num_group=5, window_scale=0.9, seed=seed),
    "rs2": lambda target, seed: lp.RS2(target_saving=target, seed=seed),
}
"""The dynamic methods, each asked for a target saving (settings fixed up front: see the module docs)."""

LOSSLESS_POINTS = 0.3
"""The issue's bar: no more than this many points below full data."""


class CifarShapedStream(pl.LightningDataModule):
    """Synthetic 32x32 RGB images in 10 classes (a fixed random template per class plus noise), with
    validation and test splits drawn the same way."""

    def __init__(self, num_samples: int, batch_size: int = 128, held_out: int = 256) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        templates = torch.randn(10, 3, 32, 32, generator=generator)

        def split(size: int) -> TensorDataset:
            labels = torch.randint(0, 10, (size,), generator=generator)
            return TensorDataset(0.5 * templates[labels] + torch.randn(size, 3, 32, 32, generator=generator), labels)

        self.train_dataset = lp.IndexedDataset(split(num_samples))
        self.val_dataset, self.test_dataset = split(held_out), split(held_out)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset, batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_dataset, batch_size=256)


@dataclass(frozen=True)
class Task:
    """A data set, the model trained on it, and how long."""

    description: str
    make_data: Callable[[], pl.LightningDataModule]
    make_model: Callable[[], pl.LightningModule]
    epochs: int


def tasks(epochs: int, stream_samples: int, stream_epochs: int) -> dict[str, Task]:
    def cnn() -> pl.LightningModule:
        return lp.Classifier(lp.SmallCNN(num_classes=10, width=16), lr=0.05, weighted_loss="mean")

    return {
        "digits": Task("digits, SmallCNN width 16, batch 64", lambda: lp.DigitsDataModule(batch_size=64), cnn, epochs),
        "noisy": Task(
            "digits with 20% of the training labels flipped, SmallCNN width 16, batch 64",
            lambda: lp.DigitsDataModule(batch_size=64, label_noise=0.2),
            cnn,
            epochs,
        ),
        "tabular": Task(
            "TabularDataModule (32 features, 8 classes), 2-layer MLP, batch 128",
            lambda: lp.TabularDataModule(batch_size=128),
            lambda: lp.Classifier(lp.MLP(in_features=32, num_classes=8), lr=0.05, weighted_loss="mean"),
            epochs,
        ),
        "stream": Task(
            f"CIFAR-shaped ResNet-18 on a synthetic 32x32 stream, N = {stream_samples}, batch 128",
            lambda: CifarShapedStream(stream_samples),
            lambda: lp.Classifier(lp.cifar_resnet18(num_classes=10), lr=0.05, weighted_loss="mean"),
            stream_epochs,
        ),
    }


@dataclass(frozen=True)
class Fit:
    skipped: float
    samples: int
    seconds: float
    val_acc: float
    test_acc: float


def run_fit(task: Task, seed: int, callback: pl.Callback | None, budget: StepBudget | None) -> Fit:
    pl.seed_everything(seed, verbose=False)
    model, data = task.make_model(), task.make_data()
    meter = CostMeter()
    callbacks: list[pl.Callback] = [meter, *(c for c in (callback, budget) if c is not None)]
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=task.epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,  # validated once after the fit: the wall time is the training's
    )
    fitted = callback.wrap(data) if callback is not None else data  # type: ignore[attr-defined]
    start = time.perf_counter()
    trainer.fit(model, datamodule=fitted)
    seconds = time.perf_counter() - start
    evaluator = pl.Trainer(
        accelerator="auto", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    val_acc = float(evaluator.validate(model, datamodule=data, verbose=False)[0]["val_acc"])
    test_acc = float(evaluator.test(model, datamodule=data, verbose=False)[0]["test_acc"])
    skipped = float(getattr(callback, "fraction_skipped", 0.0))
    return Fit(skipped, meter.samples, seconds, val_acc, test_acc)


def train_size(task: Task) -> int:
    data = task.make_data()
    data.setup("fit")
    return len(data.train_dataset)  # type: ignore[attr-defined]


def measure(task: Task, seeds: list[int], targets: list[float], methods: list[str]) -> dict[str, list[Fit]]:
    """Every row's fits, seed by seed, the rows alternating within a seed."""
    num_samples = train_size(task)
    rows: dict[str, list[Fit]] = {}

    def add(row: str, fit: Fit) -> None:
        rows.setdefault(row, []).append(fit)
        # each fit as it ends, so that a run stopped early still tells what it measured
        print(
            f"    {row} seed {len(rows[row]) - 1}: skipped {fit.skipped:.1%}, {fit.samples} samples, "
            f"{fit.seconds:.1f} s, val {100 * fit.val_acc:.2f}, test {100 * fit.test_acc:.2f}",
            flush=True,
        )

    for seed in seeds:
        add("full", run_fit(task, seed, None, None))
        for target in targets:
            budget = StepBudget(num_to_keep(num_samples, target), task.epochs)
            add(f"full-budget@{target:.0%}", run_fit(task, seed, None, budget))
            for name in methods:
                add(f"{name}@{target:.0%}", run_fit(task, seed, DYNAMIC[name](target, seed), None))
    return rows


def mean(fits: list[Fit], field: str) -> float:
    return statistics.fmean(getattr(fit, field) for fit in fits)


def spread(fits: list[Fit], field: str) -> float:
    return statistics.pstdev(getattr(fit, field) for fit in fits) if len(fits) > 1 else 0.0


def report(rows: dict[str, list[Fit]], targets: list[float], methods: list[str]) -> None:
    full = rows["full"]
    full_samples, full_seconds, full_val, full_test = (
        mean(full, f) for f in ("samples", "seconds", "val_acc", "test_acc")
    )
    header = (
        f"  {'row':<18} {'skipped':>8} {'samples':>9} {'x full':>7} {'s/fit':>7} {'x full':>7} {'val acc':>8} "
        f"{'test acc':>13} {'vs full':>8} {'vs budget':>9}"
    )
    print(header)
    for name, fits in rows.items():
        target = name.split("@")[1] if "@" in name else None
        budget = rows.get(f"full-budget@{target}") if target else None
        test = mean(fits, "test_acc")
        versus_budget = (
            ""
            if budget is None or name.startswith("full-budget")
            else f"{100 * (test - mean(budget, 'test_acc')):+.2f}"
        )
        print(
            f"  {name:<18} {mean(fits, 'skipped'):>8.1%} {mean(fits, 'samples'):>9.0f} "
            f"{mean(fits, 'samples') / full_samples:>7.3f} {mean(fits, 'seconds'):>7.2f} "
            f"{mean(fits, 'seconds') / full_seconds:>7.3f} {100 * mean(fits, 'val_acc'):>8.2f} "
            f"{100 * test:>7.2f} ± {100 * spread(fits, 'test_acc'):>4.2f} {100 * (test - full_test):>+8.2f} {versus_budget:>9}"
        )
    print(f"  (seeds: {len(full)}; 'skipped' is measured; 'vs budget': test points above full-budget at that target)")
    for method in methods:
        lossless = [
            t for t in targets if 100 * (full_val - mean(rows[f"{method}@{t:.0%}"], "val_acc")) <= LOSSLESS_POINTS
        ]
        if not lossless:
            print(f"  {method}: no target within {LOSSLESS_POINTS} points of full data on validation")
            continue
        pick = max(lossless)
        fits = rows[f"{method}@{pick:.0%}"]
        gap = 100 * (mean(fits, "test_acc") - full_test)
        budget_gap = 100 * (mean(fits, "test_acc") - mean(rows[f"full-budget@{pick:.0%}"], "test_acc"))
        print(
            f"  {method}: largest target within {LOSSLESS_POINTS} points of full on validation: {pick:.0%} -> "
            f"{1 - mean(fits, 'samples') / full_samples:.1%} fewer samples forwarded, wall time "
            f"{mean(fits, 'seconds') / full_seconds:.2f}x, test {gap:+.2f} points vs full, {budget_gap:+.2f} vs full-budget"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", choices=["digits", "noisy", "tabular", "stream"], default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--targets", type=float, nargs="+", default=None)
    parser.add_argument("--methods", nargs="+", choices=sorted(DYNAMIC), default=sorted(DYNAMIC))
    parser.add_argument("--epochs", type=int, default=None, help="epochs on the study's data sets (default 20)")
    parser.add_argument("--stream-samples", type=int, default=None)
    parser.add_argument("--stream-epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="a reduced run of a few minutes (see above)")
    args = parser.parse_args()
    # the table says what each fit did; Lightning's per-fit messages would bury it
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    quick = args.quick
    seeds = args.seeds or ([0] if quick else [0, 1, 2])
    targets = args.targets or ([0.5] if quick else [0.3, 0.4, 0.5, 0.6])
    epochs = args.epochs or (10 if quick else 20)
    stream_samples = args.stream_samples or (128 if quick else 1024)
    stream_epochs = args.stream_epochs or 8  # InfoBatch at a 60% target needs 8 (its first and last epochs are full)
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = args.data or ["digits", "noisy", "tabular", "stream"]
    print(
        f"dynamic savings: methods {', '.join(args.methods)}; targets {', '.join(f'{t:.0%}' for t in targets)}; "
        f"seeds {seeds}; {torch.get_num_threads()} torch threads; "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    for name in chosen:
        task = tasks(epochs, stream_samples, stream_epochs)[name]
        print(f"\n{name}: {task.description}, {task.epochs} epochs", flush=True)
        report(measure(task, seeds, targets, args.methods), targets, args.methods)


if __name__ == "__main__":
    main()
