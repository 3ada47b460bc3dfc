"""Dataset pruning in your own Lightning code: score, select, train on the coreset.

The model below is an ordinary LightningModule; the only lightning-prune-specific lines are the
collectors in the first Trainer, `lp.select`, and `lp.PrunedDataModule` around the datamodule.
Run: python examples/prune_digits.py
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

import lightning_prune as lp


class DigitsNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.accuracy = MulticlassAccuracy(num_classes=10, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, index = batch  # the datamodule's training items carry their index
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits}  # collectors read "logits"

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.accuracy(self(x), y)
        self.log("test_acc", self.accuracy)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def trainer(epochs: int, callbacks=()) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def main() -> None:
    L.seed_everything(0, verbose=False)
    datamodule = lp.DigitsDataModule(batch_size=64, val_fraction=0.0)

    # 1. Score: add collectors to an ordinary training run on the full data.
    tdds, forgetting = lp.TDDS(trajectory=10, window=5), lp.Forgetting()
    full_model = DigitsNet()
    trainer(10, [tdds, forgetting]).fit(full_model, datamodule=datamodule)
    full_acc = trainer(1).test(full_model, datamodule=datamodule, verbose=False)[0]["test_acc"]

    # 2. Select: keep half of the training set by TDDS score.
    selection = lp.select(tdds.scores, prune_ratio=0.5, strategy="topk")
    random_half = lp.select(tdds.scores, prune_ratio=0.5, strategy="random", seed=0)

    # 3. Train on the coreset: swap the datamodule, nothing else changes.
    print(f"\nfull data ({len(tdds.scores)} samples): test accuracy {full_acc:.3f}")
    for name, chosen in (("TDDS top-50%", selection), ("random 50%", random_half)):
        L.seed_everything(0, verbose=False)
        model = DigitsNet()
        fit_trainer = trainer(10)
        fit_trainer.fit(model, datamodule=lp.PrunedDataModule(datamodule, chosen))
        accuracy = fit_trainer.test(model, datamodule=datamodule, verbose=False)[0]["test_acc"]
        print(f"{name:>13} ({len(chosen)} samples): test accuracy {accuracy:.3f}")
    overlap = len(set(selection.indices) & set(lp.select(forgetting.scores, 0.5).indices)) / len(selection)
    print(f"TDDS and forgetting keep {overlap:.0%} of the same samples")


if __name__ == "__main__":
    main()
