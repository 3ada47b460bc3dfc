"""What dynamic pruning saves: InfoBatch against full-data training, measured side by side in one run.

Part 1 (``study``) trains the built-in study's model (digits, SmallCNN width 16, batch 64, lr 0.05,
cosine, 20 epochs) with and without InfoBatch for each seed, alternating the two, and prints per fit
the samples forwarded, the wall time and the test accuracy, then the means and the ratios.

Part 2 (``stream``) does the same on a CIFAR-shaped ResNet-18 (3x3 stem, no max-pool) over a synthetic
32x32 stream with learnable labels (a fixed random class template plus noise), where the forward and
backward passes dominate the time, so the wall-time ratio shows what skipping samples buys.

Run: python benchmarks/infobatch_savings.py [--part study|stream|both] [--seeds 0 1 2] [--ratio 0.5] [--delta 0.875]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_prune as lp
from lightning_prune.pipeline.cost import CostMeter


def _fit(model: pl.LightningModule, data: pl.LightningDataModule, epochs: int, infobatch: lp.InfoBatch | None):
    meter = CostMeter()
    callbacks: list[pl.Callback] = [meter, *([infobatch] if infobatch else [])]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=infobatch.wrap(data) if infobatch else data)
    seconds = time.perf_counter() - start
    return trainer, meter.samples, seconds


def _report(rows: dict[str, list[tuple[int, float, float | None]]]) -> None:
    full = rows["full"]
    for name, runs in rows.items():
        for seed, (samples, seconds, acc) in enumerate(runs):
            acc_text = "" if acc is None else f", test acc {100 * acc:.2f}"
            print(f"  {name:>9} run {seed}: {samples} samples forwarded, {seconds:.2f} s{acc_text}")
    mean = {name: [statistics.fmean(run[i] for run in runs) for i in (0, 1)] for name, runs in rows.items()}
    print(
        f"  samples forwarded: infobatch / full = {mean['infobatch'][0] / mean['full'][0]:.3f} "
        f"({1 - mean['infobatch'][0] / mean['full'][0]:.1%} fewer)"
    )
    print(
        f"  wall time per fit: {mean['infobatch'][1]:.2f} s vs {mean['full'][1]:.2f} s, ratio {mean['infobatch'][1] / mean['full'][1]:.3f}"
    )
    if full[0][2] is not None:
        accs = {name: [run[2] for run in runs] for name, runs in rows.items()}
        print(
            f"  test accuracy: full {100 * statistics.fmean(accs['full']):.2f} ± {100 * statistics.pstdev(accs['full']):.2f}, "
            f"infobatch {100 * statistics.fmean(accs['infobatch']):.2f} ± {100 * statistics.pstdev(accs['infobatch']):.2f} "
            f"(difference {100 * (statistics.fmean(accs['infobatch']) - statistics.fmean(accs['full'])):+.2f} points)"
        )


def study(seeds: list[int], ratio: float, delta: float = 0.875, epochs: int = 20) -> None:
    print(
        f"Part 1: the built-in study's model on digits, {epochs} epochs, InfoBatch prune_ratio={ratio}, delta={delta}"
    )
    rows: dict[str, list[tuple[int, float, float | None]]] = {"full": [], "infobatch": []}
    for seed in seeds:
        for name in ("full", "infobatch"):  # alternating, so that machine load hits both alike
            pl.seed_everything(seed, verbose=False)
            backbone = lp.SmallCNN(num_classes=10, width=16)
            model = lp.Classifier(backbone, lr=0.05, weighted_loss="mean")
            data = lp.DigitsDataModule(batch_size=64)
            infobatch = lp.InfoBatch(prune_ratio=ratio, delta=delta, seed=seed) if name == "infobatch" else None
            trainer, samples, seconds = _fit(model, data, epochs, infobatch)
            acc = trainer.test(model, datamodule=data, verbose=False)[0]["test_acc"]
            rows[name].append((samples, seconds, acc))
    _report(rows)


class _Stream(pl.LightningDataModule):
    def __init__(self, num_samples: int, batch_size: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 10, (num_samples,), generator=generator)
        templates = torch.randn(10, 3, 32, 32, generator=generator)
        noise = torch.randn(num_samples, 3, 32, 32, generator=generator)
        images = 0.5 * templates[labels] + noise
        self.train_set = lp.IndexedDataset(TensorDataset(images, labels))
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)


def stream(seeds: list[int], ratio: float, delta: float, epochs: int, num_samples: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    print(
        f"Part 2: CIFAR-shaped ResNet-18 on a synthetic 32x32 stream, N = {num_samples}, batch 128, "
        f"{epochs} epochs, InfoBatch prune_ratio={ratio}, {torch.get_num_threads()} threads"
    )
    rows: dict[str, list[tuple[int, float, float | None]]] = {"full": [], "infobatch": []}
    for seed in seeds:
        for name in ("full", "infobatch"):
            pl.seed_everything(seed, verbose=False)
            model = lp.Classifier(lp.cifar_resnet18(num_classes=10), lr=0.05, weighted_loss="mean")
            infobatch = lp.InfoBatch(prune_ratio=ratio, delta=delta, seed=seed) if name == "infobatch" else None
            _, samples, seconds = _fit(model, _Stream(num_samples, 128), epochs, infobatch)
            rows[name].append((samples, seconds, None))
    _report(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["study", "stream", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--delta", type=float, default=0.875)
    parser.add_argument("--stream-epochs", type=int, default=8)
    parser.add_argument("--stream-samples", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.part in ("study", "both"):
        study(args.seeds, args.ratio, args.delta)
    if args.part in ("stream", "both"):
        stream(args.seeds, args.ratio, args.delta, args.stream_epochs, args.stream_samples, args.threads)


if __name__ == "__main__":
    main()
