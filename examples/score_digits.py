"""Add lightning-prune's collectors to an ordinary Lightning training run and read the scores.

Scores scikit-learn's bundled handwritten digits with TDDS and forgetting events, then prints a
summary. Run: python examples/score_digits.py
"""

from __future__ import annotations

import time

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_prune as lp


class DigitsMLP(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, index = batch  # IndexedDataset adds the index
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits}  # collectors read "logits"

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def main() -> None:
    L.seed_everything(0, verbose=False)
    digits = load_digits()
    inputs = torch.tensor(digits.images / 16.0, dtype=torch.float32)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_set = lp.IndexedDataset(TensorDataset(inputs, labels))

    tdds = lp.TDDS(trajectory=10, window=5, decay=0.9)
    forgetting = lp.Forgetting()
    start = time.perf_counter()
    trainer = L.Trainer(max_epochs=10, callbacks=[tdds, forgetting], accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(DigitsMLP(), DataLoader(train_set, batch_size=64, shuffle=True))
    elapsed = time.perf_counter() - start

    print(f"\nScored {len(train_set)} digits in {elapsed:.1f} s (10 epochs)")
    for scores in (tdds.scores, forgetting.scores):
        values = scores.values
        order = np.argsort(-values)
        print(f"{scores.method:>10}: mean {values.mean():.4f}  min {values.min():.4f}  max {values.max():.4f}  "
              f"most important samples {order[:5].tolist()}")
    ranks = [np.argsort(np.argsort(s.values)) for s in (tdds.scores, forgetting.scores)]
    print(f"Spearman correlation TDDS vs forgetting: {np.corrcoef(*ranks)[0, 1]:.3f}")


if __name__ == "__main__":
    main()
