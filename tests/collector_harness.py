"""Shared fixtures for collector tests: a model whose logits are known in advance, and references.

``KnownLogitsModel`` produces, for sample i in epoch t, the logits ``head(features[t, i])`` of a
frozen linear head over a fixed random feature table; training only moves a dummy parameter. The
logits of every (epoch, sample) are therefore known before training, whatever the batch order,
the number of processes or an interruption, so each collector can be compared with a brute-force
reference computed from the stacked per-epoch probabilities.

Each collector under test is registered in ``CASES`` with a factory and a reference; the
exactness, DDP and resume tests are parametrised over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_prune as lp

NUM_SAMPLES = 37  # not divisible by world size x batch size
NUM_CLASSES = 5
HIDDEN = 6
EPOCHS = 8
BATCH_SIZE = 4


def make_labels(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, NUM_CLASSES, (NUM_SAMPLES,), generator=torch.Generator().manual_seed(seed))


def make_dataset(seed: int = 0) -> lp.IndexedDataset:
    inputs = torch.zeros(NUM_SAMPLES, 1)
    return lp.IndexedDataset(TensorDataset(inputs, make_labels(seed)))


def make_loader(shuffle: bool = True, seed: int = 0) -> DataLoader:
    return DataLoader(make_dataset(seed), batch_size=BATCH_SIZE, shuffle=shuffle)


class KnownLogitsModel(pl.LightningModule):
    def __init__(self, epochs: int = EPOCHS, seed: int = 0, with_validation: bool = False) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed + 1)
        # labels leak into the features so that some samples are learned, some forgotten
        labels = make_labels(seed)
        table = torch.randn(epochs, NUM_SAMPLES, HIDDEN, generator=generator)
        table[:, :, : NUM_CLASSES] += 1.5 * nn.functional.one_hot(labels, NUM_CLASSES).float()
        self.register_buffer("features", table)
        self.head = nn.Linear(HIDDEN, NUM_CLASSES)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(NUM_CLASSES, HIDDEN) + 0.1 * torch.randn(NUM_CLASSES, HIDDEN, generator=generator))
            self.head.bias.copy_(0.1 * torch.randn(NUM_CLASSES, generator=generator))
        self.head.requires_grad_(False)
        self.dummy = nn.Parameter(torch.ones(1))
        self.with_validation = with_validation

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def training_step(self, batch, batch_idx):
        _, _, index = batch
        logits = self(self.features[self.current_epoch, index])
        return {"loss": self.dummy.pow(2).sum(), "logits": logits}

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.dummy.pow(2).sum())

    def configure_optimizers(self):
        return torch.optim.SGD([self.dummy], lr=0.01)

    def expected_probs(self) -> np.ndarray:
        """[epochs, N, C] float64 probabilities of every (epoch, sample)."""
        with torch.no_grad():
            logits = self.head.double()(self.features.double())
            self.head.float()
        return torch.softmax(logits, dim=-1).numpy()


def tdds_reference(probs: np.ndarray, trajectory: int, window: int, decay: float, dispersion: str = "norm") -> np.ndarray:
    probs = probs[:trajectory]
    log_probs = np.log(probs + 1e-8)
    differences = np.abs(probs[1:] * (log_probs[1:] - log_probs[:-1])).sum(axis=2)  # [T-1, N]
    score = np.zeros(probs.shape[1])
    for start in range(trajectory - window + 1):
        window_terms = differences[start : start + window - 1]  # d_{k+1} .. d_{k+K-1}
        deviations = window_terms - window_terms.mean(axis=0)
        spread = np.sqrt((deviations**2).sum(axis=0)) if dispersion == "norm" else (deviations**2).mean(axis=0)
        weight = decay * (1 - decay) ** (trajectory - window - start)
        score += weight * spread
    return score


def forgetting_reference(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    correct = probs.argmax(axis=2) == labels[None, :]  # [E, N]
    events = (correct[:-1] & ~correct[1:]).sum(axis=0)
    return np.where(correct.any(axis=0), events, correct.shape[0]).astype(float)


@dataclass
class Case:
    make: Callable[[], lp.ScoreCollector]
    reference: Callable[[np.ndarray, np.ndarray], np.ndarray]
    rtol: float = 1e-5
    atol: float = 1e-7


CASES: dict[str, Case] = {
    "tdds": Case(
        make=lambda: lp.TDDS(trajectory=EPOCHS, window=4, decay=0.9, precision="float32"),
        reference=lambda probs, labels: tdds_reference(probs, EPOCHS, 4, 0.9),
    ),
    "tdds_variance_short": Case(
        make=lambda: lp.TDDS(trajectory=6, window=3, decay=0.5, dispersion="variance", precision="float32"),
        reference=lambda probs, labels: tdds_reference(probs, 6, 3, 0.5, "variance"),
    ),
    "forgetting": Case(make=lambda: lp.Forgetting(), reference=forgetting_reference, rtol=0, atol=0),
}


def fit(
    collectors: list[pl.Callback],
    *,
    epochs: int = EPOCHS,
    model: KnownLogitsModel | None = None,
    extra_callbacks: list[pl.Callback] | None = None,
    ckpt_path: str | None = None,
    default_root_dir: str | None = None,
    with_validation: bool = False,
    **trainer_kwargs,
) -> tuple[pl.Trainer, KnownLogitsModel]:
    model = model or KnownLogitsModel(epochs=epochs)
    enable_checkpointing = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in extra_callbacks or [])
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=[*collectors, *(extra_callbacks or [])],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=enable_checkpointing,
        default_root_dir=default_root_dir,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    val_loader = make_loader(shuffle=False) if with_validation else None
    trainer.fit(model, train_dataloaders=make_loader(), val_dataloaders=val_loader, ckpt_path=ckpt_path)
    return trainer, model
