"""Time per epoch of AdaPruner against plain training of the same backbone, side by side.

The two variants run interleaved in one process (plain, AdaPruner, AdaPruner, plain, ...), each
repeat a fresh Trainer and backbone, so that machine load drifts hit both alike. The first epoch of
every fit is dropped (data-loader start-up, allocator warm-up); the median of the remaining epoch
times is reported per variant, with their ratio.

    python benchmarks/adapruner_overhead.py                      # CIFAR-shaped synthetic data, small ResNet
    python benchmarks/adapruner_overhead.py --data digits        # scikit-learn digits, MLP
    python benchmarks/adapruner_overhead.py --accelerator gpu --samples 50000 --batch-size 256

AdaPruner runs with ``stop_at_target=False`` so that every measured step trains the mask (its most
expensive path).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune.adapruner import AdaPruner
from lightning_prune.data import IndexedDataset


class PlainClassifier(L.LightningModule):
    """The baseline: the same backbone, optimiser and schedule as AdaPruner's defaults, plain loss."""

    def __init__(self, backbone: nn.Module, lr: float = 0.1) -> None:
        super().__init__()
        self.backbone, self.lr = backbone, lr

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        logits = self.backbone(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return {"loss": loss, "logits": logits}

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.backbone.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._start)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def small_resnet(width: int, num_classes: int = 10) -> nn.Module:
    """A ResNet-8-style network for 32x32 inputs (three stages of one basic block each)."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        BasicBlock(width, width, 1),
        BasicBlock(width, 2 * width, 2),
        BasicBlock(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


def make_data(kind: str, samples: int) -> tuple[TensorDataset, Callable[[], nn.Module] | None]:
    generator = torch.Generator().manual_seed(0)
    if kind == "digits":
        from sklearn.datasets import load_digits

        features, labels = load_digits(return_X_y=True)
        x = torch.tensor(features / 16.0, dtype=torch.float32)
        y = torch.tensor(labels)
        return TensorDataset(x, y), lambda: nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    x = torch.randn(samples, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (samples,), generator=generator)
    return TensorDataset(x, y), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["cifar-synthetic", "digits"], default="cifar-synthetic")
    parser.add_argument("--samples", type=int, default=2048, help="training samples (cifar-synthetic)")
    parser.add_argument("--width", type=int, default=16, help="ResNet base width (cifar-synthetic)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit; the first is not timed")
    parser.add_argument("--repeats", type=int, default=3, help="fits per variant, interleaved")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch of each fit is not timed.")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    base, make_mlp = make_data(args.data, args.samples)
    train_set = IndexedDataset(base)
    num_samples = len(train_set)

    def build(variant: str, seed: int) -> L.LightningModule:
        torch.manual_seed(seed)
        backbone = make_mlp() if make_mlp is not None else small_resnet(args.width)
        if variant == "plain":
            return PlainClassifier(backbone)
        return AdaPruner(backbone, num_samples=num_samples, keep_ratio=0.7, stop_at_target=False)

    times: dict[str, list[float]] = {"plain": [], "adapruner": []}
    for repeat in range(args.repeats):
        order = ("plain", "adapruner") if repeat % 2 == 0 else ("adapruner", "plain")
        for variant in order:
            timer = EpochTimer()
            trainer = L.Trainer(
                accelerator=args.accelerator,
                devices=1,
                max_epochs=args.epochs,
                enable_progress_bar=False,
                enable_model_summary=False,
                enable_checkpointing=False,
                logger=False,
                num_sanity_val_steps=0,
                callbacks=[timer],
            )
            loader = DataLoader(
                train_set,
                batch_size=args.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(repeat),
            )
            trainer.fit(build(variant, repeat), loader)
            times[variant].extend(timer.times[1:])
            print(f"repeat {repeat} {variant:>9}: " + " ".join(f"{t:.3f}s" for t in timer.times[1:]), flush=True)

    plain, ada = statistics.median(times["plain"]), statistics.median(times["adapruner"])
    steps = -(-num_samples // args.batch_size)
    if args.accelerator in ("gpu", "cuda"):
        device = torch.cuda.get_device_name()
    else:
        device = f"cpu ({torch.get_num_threads()} threads)"
    print()
    print(f"data={args.data} N={num_samples} batch={args.batch_size} steps/epoch={steps} device={device}")
    print(
        f"median time per epoch  plain: {plain:.3f}s  adapruner: {ada:.3f}s  "
        f"(over {len(times['plain'])} and {len(times['adapruner'])} epochs)"
    )
    print(f"ratio adapruner / plain: {ada / plain:.3f}  ({(ada - plain) / steps * 1000:+.2f} ms per step)")


if __name__ == "__main__":
    main()
