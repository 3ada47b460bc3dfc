"""Dynamic pruning for any task and loss: InfoBatch ranks samples by the unreduced ``"loss_per_sample"``
``training_step`` returns (regression, segmentation, a language model's token loss), ``loss_fn=`` stays
for classification, and every ambiguous or missing source is refused naming the fix; the weights the
sampler serves reach any task's loss through ``lp.batch_weights`` / ``lp.weighted_outputs``."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import lightning_prune as lp
from lightning_prune.dynamic import infobatch_plan

N, BATCH, EPOCHS, DELTA, RATIO, SEED = 96, 16, 4, 0.75, 0.5, 2


def fit(model, *callbacks, datamodule, epochs=EPOCHS, **trainer_args):
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **trainer_args,
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


def data_of(dataset: Dataset, batch_size: int = BATCH) -> pl.LightningDataModule:
    return pl.LightningDataModule.from_datasets(train_dataset=lp.IndexedDataset(dataset), batch_size=batch_size)


def regression_set() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, 5, generator=generator)
    y = x @ torch.linspace(-1, 1, 5) + 0.1 * torch.randn(N, generator=generator)
    return TensorDataset(x, y)


class Regressor(pl.LightningModule):
    """A user's regression model: per-sample squared error, returned unreduced."""

    def __init__(self, weighting: str = "weighted_outputs") -> None:
        super().__init__()
        self.net = nn.Linear(5, 1)
        self.weighting = weighting

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        per_sample = F.mse_loss(self.net(x).squeeze(1), y, reduction="none")
        if self.weighting == "weighted_outputs":
            return lp.weighted_outputs(per_sample, batch)
        if self.weighting == "ignored":
            return {"loss": per_sample.mean(), "loss_per_sample": per_sample}
        return {"loss": (lp.batch_weights(batch) * per_sample).mean()}  # "none": no per-sample loss returned

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


# ---------------------------------------------------------------------------------------- the weights
def test_batch_weights_counts_samples_for_any_target():
    x, index = torch.zeros(4, 3), torch.arange(4)
    regression = (x, torch.rand(4), index, torch.tensor([1.0, 2.0, 1.0, 2.0]))
    np.testing.assert_array_equal(lp.batch_weights(regression).numpy(), [1.0, 2.0, 1.0, 2.0])
    masks = (x, torch.zeros(4, 5, 5, dtype=torch.int64), index)  # segmentation: one mask per sample
    np.testing.assert_array_equal(lp.batch_weights(masks).numpy(), [1.0] * 4)
    tokens = {"input_ids": torch.zeros(4, 7, dtype=torch.int64), "labels": torch.zeros(4, 7), "index": index}
    assert lp.batch_weights(tokens).shape == (4,)
    with pytest.raises(ValueError, match="3 weights for 4 samples"):
        lp.batch_weights((x, torch.rand(4), index, torch.ones(3)))


def test_weighted_outputs_is_the_weighted_mean_and_the_unreduced_loss():
    batch = (torch.zeros(3, 2), torch.rand(3), torch.arange(3), torch.tensor([2.0, 1.0, 1.0]))
    per_sample = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    out = lp.weighted_outputs(per_sample, batch, logits=torch.zeros(3, 2))
    assert float(out["loss"]) == pytest.approx((2 + 2 + 3) / 3)
    assert out["loss_per_sample"] is per_sample and set(out) == {"loss", "loss_per_sample", "logits"}
    out["loss"].backward()
    np.testing.assert_allclose(per_sample.grad.numpy(), [2 / 3, 1 / 3, 1 / 3])
    with pytest.raises(
        ValueError, match=r"one loss per sample, shape \(3,\).*got shape \(3, 4\).*mean\(dim=\(1, 2\)\)"
    ):
        lp.weighted_outputs(torch.zeros(3, 4), batch)
    with pytest.raises(TypeError, match="computes 'loss' itself"):
        lp.weighted_outputs(per_sample, batch, loss=per_sample.sum())


# ---------------------------------------------------------------------------------------- the losses it ranks by
class KnownLoss(pl.LightningModule):
    """Sample i's loss in epoch t is a known number, whatever the batch order; only a dummy parameter moves."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(5)
        self.register_buffer("table", torch.rand(EPOCHS, N, generator=generator) * 3)
        self.dummy = nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        index = batch[2]
        per_sample = self.table[self.current_epoch, index] * self.dummy.pow(2)
        return lp.weighted_outputs(per_sample, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # the losses stay the table's


class Served(pl.Callback):
    def __init__(self) -> None:
        self.indices: list[list[int]] = []
        self.weights: list[dict[int, float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.indices.append([])
        self.weights.append({})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.indices[-1] += batch[2].tolist()
        self.weights[-1].update(zip(batch[2].tolist(), batch[3].tolist(), strict=True))


def test_the_loss_training_step_returns_is_the_one_infobatch_plans_by():
    model, served = KnownLoss(), Served()
    infobatch = lp.InfoBatch(prune_ratio=RATIO, delta=DELTA, seed=SEED)
    fit(model, infobatch, served, datamodule=infobatch.wrap(data_of(regression_set())))
    table = model.table.double().numpy()
    state, known = np.zeros(N), np.zeros(N, dtype=bool)
    for epoch in range(EPOCHS):
        if epoch < math.floor(DELTA * EPOCHS):
            plan = infobatch_plan(np.arange(N), state, known, RATIO, np.random.default_rng([SEED, epoch]))
        else:
            plan = infobatch_plan(np.arange(N), state, known, 0.0, np.random.default_rng(0))
        assert sorted(served.indices[epoch]) == plan.indices.tolist()
        assert [served.weights[epoch][i] for i in plan.indices.tolist()] == pytest.approx(plan.weights.tolist())
        state[plan.indices] = table[epoch, plan.indices]
        known[plan.indices] = True
    assert any(len(epoch) < N for epoch in served.indices)
    scores = infobatch.scores
    np.testing.assert_allclose(scores.values, state, rtol=1e-6)
    assert scores.labels is None  # no class labels were read
    assert infobatch.loss_origin == "training_step's 'loss_per_sample'"


def test_a_regression_model_trains_with_dynamic_pruning():
    infobatch = lp.InfoBatch(prune_ratio=RATIO, delta=DELTA)
    model = Regressor()
    fit(model, infobatch, datamodule=infobatch.wrap(data_of(regression_set())), epochs=6)
    assert 0 < infobatch.fraction_skipped < 1
    x, y = regression_set().tensors
    assert float(F.mse_loss(model.net(x).squeeze(1), y)) < 0.5 * float(y.var())  # it learned


class Masks(Dataset):
    """Segmentation-shaped items: a 1-channel 4x4 image and an integer mask of 3 classes."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.x = torch.randn(N, 1, 4, 4, generator=generator)
        self.masks = (self.x[:, 0] > 0).long() + (self.x[:, 0] > 1).long()

    def __len__(self) -> int:
        return N

    def __getitem__(self, i):
        return self.x[i], self.masks[i]


class Segmenter(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Conv2d(1, 3, kernel_size=1)

    def training_step(self, batch, batch_idx):
        x, masks = batch[0], batch[1]
        per_pixel = F.cross_entropy(self.net(x), masks, reduction="none")  # [B, H, W]
        return lp.weighted_outputs(per_pixel.mean(dim=(1, 2)), batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_a_segmentation_model_with_a_per_pixel_loss_trains_with_dynamic_pruning():
    infobatch = lp.InfoBatch(prune_ratio=RATIO, delta=DELTA)
    fit(Segmenter(), infobatch, datamodule=infobatch.wrap(data_of(Masks())))
    assert infobatch.fraction_skipped > 0 and infobatch.scores.values.shape == (N,)


class Sequences(Dataset):
    """Language-model-shaped dict items: token ids, next-token labels with padding (-100)."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(2)
        self.tokens = torch.randint(0, 11, (N, 6), generator=generator)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i):
        labels = self.tokens[i].roll(-1).clone()
        labels[-(1 + i % 3) :] = -100  # sequences of different lengths
        return {"input_ids": self.tokens[i], "labels": labels}


class TinyLM(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Embedding(11, 8), nn.Linear(8, 11)

    def training_step(self, batch, batch_idx):
        logits = self.head(self.embed(batch["input_ids"]))  # [B, T, V]
        labels = batch["labels"]
        token_loss = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
        mask = (labels != -100).float()
        per_sequence = (token_loss * mask).sum(dim=1) / mask.sum(dim=1)  # each sequence's mean token loss
        return lp.weighted_outputs(per_sequence, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_a_language_model_with_dict_batches_trains_with_dynamic_pruning():
    infobatch = lp.InfoBatch(prune_ratio=RATIO, delta=DELTA)
    weights: set[float] = set()

    class Weights(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            weights.update(batch["weight"].tolist())

    fit(TinyLM(), infobatch, Weights(), datamodule=infobatch.wrap(data_of(Sequences())))
    assert infobatch.fraction_skipped > 0 and weights == {1.0, 1 / (1 - RATIO)}


def test_rs2_needs_no_loss_and_serves_unit_weights_to_any_task():
    rs2 = lp.RS2(prune_ratio=0.5)
    fit(Regressor(), rs2, datamodule=rs2.wrap(data_of(regression_set())))
    assert rs2.fraction_skipped == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------- refused, naming the fix
def test_both_loss_fn_and_loss_per_sample_are_refused():
    infobatch = lp.InfoBatch(loss_fn=lambda logits, y: F.cross_entropy(logits, y, reduction="none"))
    with pytest.raises(ValueError, match=r"given loss_fn=.*also returns 'loss_per_sample'.*Keep one"):
        fit(Regressor(), infobatch, datamodule=infobatch.wrap(data_of(regression_set())))


def test_neither_a_per_sample_loss_nor_logits_is_refused():
    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"needs each sample's training loss.*lp\.weighted_outputs\(per_sample_loss"):
        fit(Regressor("none"), infobatch, datamodule=infobatch.wrap(data_of(regression_set())))


def test_float_targets_without_a_per_sample_loss_are_refused():
    class LogitsOnly(Regressor):
        def training_step(self, batch, batch_idx):
            prediction = self.net(batch[0])
            loss = (lp.batch_weights(batch) * (prediction.squeeze(1) - batch[1]) ** 2).mean()
            return {"loss": loss, "logits": prediction}

    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"targets are torch.float32.*lp\.weighted_outputs"):
        fit(LogitsOnly(), infobatch, datamodule=infobatch.wrap(data_of(regression_set())))


def test_switching_the_loss_source_within_a_fit_is_refused():
    class Switches(Regressor):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            return out if batch_idx == 0 else {"loss": out["loss"]}

    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"returned 'loss_per_sample' on the fit's first batches but does not now"):
        fit(Switches(), infobatch, datamodule=infobatch.wrap(data_of(regression_set())))


def test_a_loss_per_sample_of_the_wrong_shape_is_refused():
    class PerElement(Regressor):
        def training_step(self, batch, batch_idx):
            per_sample = F.mse_loss(self.net(batch[0]), batch[1][:, None], reduction="none")  # [B, 1]
            loss = (lp.batch_weights(batch) * per_sample.squeeze(1)).mean()
            return {"loss": loss, "loss_per_sample": per_sample}

    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"training_step's 'loss_per_sample' must hold one loss per sample.*\(16, 1\)"):
        fit(PerElement(), infobatch, datamodule=infobatch.wrap(data_of(regression_set())))


def test_a_loss_per_sample_that_ignores_the_weights_is_refused():
    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"does not scale with the per-sample weights.*lp\.weighted_outputs"):
        fit(Regressor("ignored"), infobatch, datamodule=infobatch.wrap(data_of(regression_set())))


def test_a_non_finite_loss_per_sample_is_refused_naming_its_source():
    class Infinite(Regressor):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            per_sample = torch.where(batch[2] == 7, torch.inf, out["loss_per_sample"])
            return {**out, "loss_per_sample": per_sample}

    infobatch = lp.InfoBatch()
    with pytest.raises(
        FloatingPointError, match=r"training_step's 'loss_per_sample' gave a non-finite loss for 1 samples.*\[7\]"
    ):
        fit(Infinite(), infobatch, datamodule=infobatch.wrap(data_of(regression_set())))
