"""Dynamic pruning for a task that is not classification: regression with a per-sample squared error.

InfoBatch ranks samples by their latest training loss. A model that is not a classifier returns that
loss unreduced from training_step (``"loss_per_sample"``, shape [B]); ``lp.weighted_outputs`` builds
it together with the weighted mean loss the optimiser needs (the kept well-learned samples are
up-weighted by InfoBatch's sampler). The data: scikit-learn's ``make_regression`` (a noisy linear
target of 20 features, standardised). The same fit is run on the full data for comparison.

Run: python examples/regression_dynamic.py [--epochs 20] [--prune-ratio 0.5] [--samples 3000]
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from sklearn.datasets import make_regression
from torch import nn
from torch.utils.data import TensorDataset

import lightning_prune as lp


class Regressor(L.LightningModule):
    def __init__(self, in_features: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, 64), nn.ReLU(), nn.Linear(64, 1))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]  # (x, y, index) or, under dynamic pruning, (x, y, index, weight)
        per_sample = F.mse_loss(self(x), y, reduction="none")  # [B]: the loss InfoBatch ranks samples by
        return lp.weighted_outputs(per_sample, batch)  # {"loss": mean(weight * loss), "loss_per_sample": loss}

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_mse", F.mse_loss(self(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        # a cosine to 0 that follows the fraction of training done (pruned epochs are shorter)
        return {"optimizer": optimizer, "lr_scheduler": lp.cosine_schedule(optimizer, self.trainer)}


def regression_data(samples: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    x, y = make_regression(n_samples=samples, n_features=20, n_informative=10, noise=10.0, random_state=seed)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)
    split = int(0.8 * samples)
    mean, std = x[:split].mean(0), x[:split].std(0)
    y_mean, y_std = y[:split].mean(), y[:split].std()
    x, y = (x - mean) / std, (y - y_mean) / y_std
    return TensorDataset(x[:split], y[:split]), TensorDataset(x[split:], y[split:])


def fit(epochs: int, train: TensorDataset, test: TensorDataset, infobatch: lp.InfoBatch | None) -> float:
    L.seed_everything(0, verbose=False)
    data = L.LightningDataModule.from_datasets(train_dataset=lp.IndexedDataset(train), test_dataset=test, batch_size=64)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[infobatch] if infobatch is not None else [],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    model = Regressor(in_features=train.tensors[0].shape[1])
    trainer.fit(model, datamodule=infobatch.wrap(data) if infobatch is not None else data)
    return float(trainer.test(model, datamodule=data, verbose=False)[0]["test_mse"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--prune-ratio", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, test = regression_data(args.samples, args.seed)
    full_mse = fit(args.epochs, train, test, None)
    infobatch = lp.InfoBatch(prune_ratio=args.prune_ratio, seed=args.seed)
    pruned_mse = fit(args.epochs, train, test, infobatch)
    print(f"full data: test MSE {full_mse:.4f} (standardised target)")
    print(
        f"InfoBatch(prune_ratio={args.prune_ratio}): test MSE {pruned_mse:.4f}, "
        f"{100 * infobatch.fraction_skipped:.1f}% of sample presentations skipped"
    )


if __name__ == "__main__":
    main()
