"""What collectors cost: epoch-time overhead on a real model, and TDDS at ImageNet's shape.

Part 1 trains a CIFAR-shaped ResNet-18 (3x3 stem, no max-pool) on a synthetic 32x32 batch stream,
alternating runs with and without TDDS + Forgetting attached, and prints the ratio of median epoch
times measured side by side in this one run. Part 2 feeds TDDS synthetic logits at ImageNet's shape
(N = 1,281,167 samples, C = 1000 classes) through a real Trainer and prints the peak resident
memory and the time of 3 epochs.

Run: python benchmarks/collector_overhead.py [--part overhead|imagenet|both] [--batches 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

import lightning_prune as lp


class _EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._start)


class _ResNetTask(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        from lightning_prune.models import cifar_resnet18

        self.net = cifar_resnet18(num_classes=10)

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _trainer(callbacks: list[pl.Callback], epochs: int) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def _time_hooks(collector: pl.Callback, spent: list[float]) -> None:
    """Accumulate the wall time of the collector's own hooks into ``spent``."""
    for hook_name in ("on_train_batch_end", "on_train_epoch_end"):
        hook = getattr(collector, hook_name)

        def timed(*args, _hook=hook, **kwargs):
            start = time.perf_counter()
            _hook(*args, **kwargs)
            spent.append(time.perf_counter() - start)

        setattr(collector, hook_name, timed)


def overhead(batches: int, batch_size: int, repeats: int) -> float:
    n = batches * batch_size
    generator = torch.Generator().manual_seed(0)
    data = lp.IndexedDataset(
        TensorDataset(torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator))
    )
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    plain, collected, in_hooks = [], [], []
    for repeat in range(repeats):
        for attach in (False, True):  # alternate, so drift in machine load hits both sides alike
            timer = _EpochTimer()
            collectors = [lp.TDDS(trajectory=3, window=3), lp.Forgetting()] if attach else []
            spent: list[float] = []
            for collector in collectors:
                _time_hooks(collector, spent)
            pl.seed_everything(repeat, verbose=False)
            _trainer([*collectors, timer], epochs=3).fit(_ResNetTask(), loader)
            (collected if attach else plain).extend(timer.times[1:])  # epoch 0 warms up allocators
            if attach:
                in_hooks.append(sum(spent) / 3)
    ratio = statistics.median(collected) / statistics.median(plain)
    hook_share = statistics.median(in_hooks) / statistics.median(collected)
    print(f"ResNet-18, {batches} batches of {batch_size} CIFAR-shaped images per epoch, {repeats} alternating repeats")
    print(f"  median epoch without collectors: {statistics.median(plain):.2f} s   {sorted(round(t, 2) for t in plain)}")
    print(
        f"  median epoch with TDDS + Forgetting: {statistics.median(collected):.2f} s   {sorted(round(t, 2) for t in collected)}"
    )
    print(f"  overhead ratio (with / without): {ratio:.3f}")
    print(
        f"  time inside the collectors' hooks: {1000 * statistics.median(in_hooks):.1f} ms per epoch, "
        f"{100 * hook_share:.3f}% of an epoch (ratio bound from the hooks alone: {1 + hook_share:.4f})"
    )
    return ratio


class _IndexOnly(Dataset):
    """Items are just (0, label, index): the logits come from the model, not the data."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return torch.zeros(len(indices)), self.labels[index], index


def _collate_batched(batch):
    return batch  # __getitems__ already returns the collated batch


class _SyntheticLogits(pl.LightningModule):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        _, y, index = batch
        generator = torch.Generator().manual_seed(self.current_epoch * 1_000_003 + batch_idx)
        logits = torch.randn(index.numel(), self.num_classes, generator=generator) * 3
        return {"loss": self.dummy.pow(2).sum(), "logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD([self.dummy], lr=0.0)


def imagenet_shape(num_samples: int, num_classes: int, batch_size: int, epochs: int) -> None:
    labels = torch.randint(0, num_classes, (num_samples,), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(_IndexOnly(labels), batch_size=batch_size, shuffle=True, collate_fn=_collate_batched)
    tdds = lp.TDDS(trajectory=epochs, window=3, decay=0.9)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    timer = _EpochTimer()
    start = time.perf_counter()
    _trainer([tdds, timer], epochs=epochs).fit(_SyntheticLogits(num_classes), loader)
    scores = tdds.scores
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"TDDS at ImageNet's shape: N={num_samples:,}, C={num_classes}, batch {batch_size}, {epochs} epochs")
    print(
        f"  time: {elapsed:.1f} s in all, epochs {[round(t, 1) for t in timer.times]} s "
        "(includes generating the synthetic logits)"
    )
    print(
        f"  peak RSS: {peak:.2f} GiB (before the run: {before:.2f} GiB); scores finite: {bool((scores.values >= 0).all())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("overhead", "imagenet", "both"), default="both")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=1_281_167)
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args()
    if args.part in ("overhead", "both"):
        overhead(args.batches, args.batch_size, args.repeats)
    if args.part in ("imagenet", "both"):
        imagenet_shape(args.num_samples, args.num_classes, batch_size=1024, epochs=3)


if __name__ == "__main__":
    main()
