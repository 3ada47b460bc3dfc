"""InfoBatch's contract with the user's code: misuse is refused naming the fix (a model that ignores or
normalises the weights, a wrapped module without the callback, a loss_fn that is not per sample, a
non-finite loss, bad arguments), schedules and trainer settings that would silently miss pruning or
annealing are refused, and one ``training_step`` serves collectors and InfoBatch alike."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_prune as lp
from lightning_prune.data.indexed import batch_weights
from lightning_prune.models.schedules import cosine_schedule, progress_cosine


class UserModel(pl.LightningModule):
    """A user's own LightningModule (not ``lp.Classifier``): one training_step for every batch shape."""

    def __init__(self, weighting: str = "mean", schedule: str = "helper", interval: str = "step") -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.weighting, self.schedule, self.interval = weighting, schedule, interval

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y, _ = lp.unpack_batch(batch)
        logits = self(x)
        per_sample = F.cross_entropy(logits, y, reduction="none")
        weights = batch_weights(batch)
        if self.weighting == "mean":
            loss = (weights * per_sample).mean()
        elif self.weighting == "normalized":
            loss = (weights * per_sample).sum() / weights.sum()
        else:  # ignores the weights
            loss = per_sample.mean()
        return {"loss": loss, "logits": logits}

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        if self.schedule == "helper":
            return {"optimizer": optimizer, "lr_scheduler": cosine_schedule(optimizer, self.trainer)}
        if self.schedule == "progress":
            scheduler = progress_cosine(optimizer, self.trainer)
        elif self.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=int(self.trainer.estimated_stepping_batches)
            )
        else:
            total = int(self.trainer.estimated_stepping_batches)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.interval}}


class LastLr(pl.Callback):
    def __init__(self) -> None:
        self.lr: float | None = None
        self.batches: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.batches.append(0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.batches[-1] += 1


def fit(model, *callbacks, datamodule, epochs=4, **trainer_args):
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


def digits(batch_size: int = 64) -> lp.DigitsDataModule:
    return lp.DigitsDataModule(batch_size=batch_size)


# ---------------------------------------------------------------------------------------- misuse
@pytest.mark.parametrize("weighting", ["ignored", "normalized"])
def test_a_user_model_that_ignores_or_normalises_the_weights_is_refused(weighting):
    infobatch = lp.InfoBatch()
    with pytest.raises(
        ValueError, match=r"does not scale with the per-sample weights.*batch_weights\(batch\) \* per_sample_loss"
    ):
        fit(UserModel(weighting), infobatch, datamodule=infobatch.wrap(digits()))
    assert infobatch.epochs_collected == 0  # refused before the first optimiser step's epoch ends


def test_a_user_model_that_weights_the_mean_trains_and_prunes():
    infobatch = lp.InfoBatch(delta=0.75)
    fit(UserModel("mean"), infobatch, datamodule=infobatch.wrap(digits()))
    assert infobatch.fraction_skipped > 0


def test_the_weight_check_can_be_switched_off_for_weights_outside_autograd():
    infobatch = lp.InfoBatch(delta=0.75, check_weighting=False)
    fit(UserModel("ignored"), infobatch, datamodule=infobatch.wrap(digits()))
    assert infobatch.fraction_skipped > 0


def test_a_wrapped_module_without_the_callback_is_refused():
    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"not among the Trainer's callbacks.*callbacks=\[infobatch"):
        fit(UserModel(), datamodule=infobatch.wrap(digits()))


@pytest.mark.parametrize(
    ("loss_fn", "shape"),
    [
        (F.cross_entropy, r"\(\)"),
        (lambda logits, y: F.cross_entropy(logits, y, reduction="none")[:, None], r"\(64, 1\)"),
        (lambda logits, y: -F.log_softmax(logits, dim=1), r"\(64, 10\)"),
    ],
)
def test_a_loss_fn_that_is_not_per_sample_is_refused(loss_fn, shape):
    infobatch = lp.InfoBatch(loss_fn=loss_fn)
    with pytest.raises(ValueError, match=rf"one loss per sample.*shape {shape}.*reduction=\"none\""):
        fit(UserModel(), infobatch, datamodule=infobatch.wrap(digits()), epochs=3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_fails_at_the_epoch_end_naming_the_samples(bad):
    def loss_fn(logits, targets):
        loss = F.cross_entropy(logits, targets, reduction="none")
        return torch.where(targets == 3, torch.full_like(loss, bad), loss)

    dm = digits()
    infobatch = lp.InfoBatch(loss_fn=loss_fn)
    with pytest.raises(FloatingPointError, match=r"non-finite loss for \d+ samples in epoch 0") as raised:
        fit(UserModel(), infobatch, datamodule=infobatch.wrap(dm), epochs=3)
    dm.setup("fit")
    of_class_3 = np.flatnonzero(dm.targets == 3)
    message = str(raised.value)
    assert f"for {of_class_3.size} samples" in message
    named = [int(i) for i in message.split("indices ")[1].split(")")[0].strip("[").split("]")[0].split(", ")]
    assert set(named) <= set(of_class_3.tolist()) and len(named) == min(10, of_class_3.size)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: lp.InfoBatch(prune_ratio="half"), TypeError, "prune_ratio='half'"),
        (lambda: lp.InfoBatch(prune_ratio=0.0), ValueError, r"prune_ratio=0.0 must lie in \(0, 0.9\]"),
        (lambda: lp.InfoBatch(prune_ratio=True), TypeError, "prune_ratio=True"),
        (lambda: lp.InfoBatch(delta=None), TypeError, "delta=None"),
        (lambda: lp.InfoBatch(delta=0.0), ValueError, r"delta=0.0 must lie in \(0, 1\]"),
        (lambda: lp.InfoBatch(seed=None), TypeError, "seed=None"),
        (lambda: lp.InfoBatch(seed=True), TypeError, "seed=True"),
        (lambda: lp.InfoBatch(num_epochs=True), TypeError, "num_epochs=True"),
        (lambda: lp.InfoBatch(num_epochs="8"), TypeError, "num_epochs='8'"),
        (lambda: lp.InfoBatch(loss_fn="ce"), TypeError, "loss_fn='ce'"),
    ],
)
def test_bad_arguments_are_refused_naming_them(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_numpy_arguments_are_accepted():
    infobatch = lp.InfoBatch(
        prune_ratio=np.float64(0.5), delta=np.float32(0.5), seed=np.int64(3), num_epochs=np.int64(8)
    )
    assert (infobatch.prune_ratio, infobatch.seed, infobatch.num_epochs) == (0.5, 3, 8)


# ---------------------------------------------------------------------------------------- schedules / trainer
@pytest.mark.parametrize(("epochs", "settings"), [(1, {}), (2, {}), (8, {"num_epochs": 2})])
def test_a_plan_that_can_never_prune_is_refused(epochs, settings):
    infobatch = lp.InfoBatch(**settings)
    with pytest.raises(ValueError, match=r"never prunes.*at least 3 epochs"):
        fit(UserModel(), infobatch, datamodule=infobatch.wrap(digits()), epochs=epochs)


def test_a_plan_that_never_anneals_warns():
    infobatch = lp.InfoBatch(num_epochs=8)
    with pytest.warns(UserWarning, match=r"max_epochs=3: this fit never anneals"):
        fit(UserModel(), infobatch, datamodule=infobatch.wrap(digits()), epochs=3)


def test_max_steps_that_can_stop_before_the_epochs_end_is_refused():
    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"max_steps=30.*annealing"):
        fit(UserModel(), infobatch, datamodule=infobatch.wrap(digits()), epochs=8, max_steps=30)


def test_max_steps_that_cannot_bind_is_accepted():
    infobatch = lp.InfoBatch(delta=0.75)
    fit(UserModel(), infobatch, datamodule=infobatch.wrap(digits()), epochs=4, max_steps=4 * 17)
    assert infobatch.fraction_skipped > 0


def test_progress_cosine_follows_max_steps_when_it_binds():
    log = LastLr()
    trainer = fit(UserModel("mean", schedule="progress"), log, datamodule=digits(), epochs=10, max_steps=25)
    assert trainer.global_step == 25 and log.lr == pytest.approx(0.0, abs=1e-12)


def test_progress_cosine_with_only_max_steps():
    log = LastLr()
    trainer = fit(UserModel("mean", schedule="progress"), log, datamodule=digits(), epochs=-1, max_steps=20)
    assert trainer.global_step == 20 and log.lr == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_step_counted_schedule_is_refused_naming_progress_cosine(schedule):
    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"lp\.progress_cosine"):
        fit(UserModel(schedule=schedule), infobatch, datamodule=infobatch.wrap(digits()))


def test_progress_cosine_stepped_per_epoch_is_refused():
    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"progress_cosine.*interval.*\"step\""):
        fit(UserModel(schedule="progress", interval="epoch"), infobatch, datamodule=infobatch.wrap(digits()))
    # without InfoBatch too: the schedule checks how it is stepped
    with pytest.raises(ValueError, match=r"progress_cosine.*interval.*\"step\""):
        fit(UserModel(schedule="progress", interval="epoch"), datamodule=digits(), epochs=2)


def test_the_cosine_helper_ends_at_zero_for_any_model_with_or_without_infobatch():
    log = LastLr()
    infobatch = lp.InfoBatch(delta=0.75)
    fit(UserModel(), infobatch, log, datamodule=infobatch.wrap(digits()))
    assert log.lr == pytest.approx(0.0, abs=1e-12) and min(log.batches) < max(log.batches)
    plain = LastLr()
    trainer = fit(UserModel(), plain, datamodule=digits(), epochs=2)
    config = trainer.lr_scheduler_configs[0]
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and config.interval == "step"
    assert plain.lr == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("limit", [5, 0.5])
def test_fraction_skipped_counts_what_was_served_under_limit_train_batches(limit):
    log = LastLr()
    infobatch = lp.InfoBatch(delta=0.75)
    fit(UserModel(), infobatch, log, datamodule=infobatch.wrap(digits()), limit_train_batches=limit)
    full_batches = 5 if limit == 5 else int(17 * 0.5)
    served = sum(min(b * 64, infobatch.served[e][0]) for e, b in enumerate(log.batches))
    assert [infobatch.served[e][1] for e in range(4)] == [full_batches * 64] * 4
    assert infobatch.fraction_skipped == pytest.approx(1 - served / (4 * full_batches * 64))
    if limit == 5:  # every epoch still serves 5 full batches: nothing was skipped
        assert log.batches == [5, 5, 5, 5] and infobatch.fraction_skipped == 0.0


def test_an_integer_val_check_interval_longer_than_a_pruned_epoch_is_refused_at_fit_start():
    infobatch = lp.InfoBatch(prune_ratio=0.7)
    with pytest.raises(ValueError, match=r"val_check_interval=15.*check_val_every_n_epoch=None"):
        fit(UserModel(), infobatch, datamodule=infobatch.wrap(digits()), val_check_interval=15)
    assert infobatch.epochs_collected == 0
    short = lp.InfoBatch(prune_ratio=0.7)
    fit(UserModel(), short, datamodule=short.wrap(digits()), val_check_interval=3)


def test_gradient_accumulation_steps_per_window_and_anneals_to_zero():
    log = LastLr()
    infobatch = lp.InfoBatch(delta=0.75)
    trainer = fit(UserModel(), infobatch, log, datamodule=infobatch.wrap(digits()), accumulate_grad_batches=3)
    assert min(log.batches) < max(log.batches)
    assert trainer.global_step == sum(math.ceil(b / 3) for b in log.batches)
    assert log.lr == pytest.approx(0.0, abs=1e-12) and infobatch.fraction_skipped > 0


# ---------------------------------------------------------------------------------------- one model for both
def test_one_training_step_serves_collectors_and_infobatch():
    el2n = lp.EL2N(epochs=1)
    fit(UserModel(), el2n, datamodule=digits(), epochs=2)  # (x, y, index): weights of ones
    assert el2n.scores.values.shape == (len(digits_train()),)
    infobatch = lp.InfoBatch(delta=0.75)
    fit(UserModel(), infobatch, datamodule=infobatch.wrap(digits()))  # (x, y, index, weight)
    assert infobatch.fraction_skipped > 0


def digits_train():
    dm = digits()
    dm.setup("fit")
    return dm.train_dataset


def test_batch_weights_reads_every_batch_shape():
    x, y, index = torch.zeros(3, 2), torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7])
    np.testing.assert_array_equal(batch_weights((x, y, index)).numpy(), [1.0, 1.0, 1.0])
    assert batch_weights((x, y, index)).dtype == torch.float32
    np.testing.assert_array_equal(batch_weights((x, y, index, torch.tensor([2.0, 1.0, 0.5]))).numpy(), [2.0, 1.0, 0.5])
    np.testing.assert_array_equal(batch_weights({"x": x, "y": y, "index": index}).numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(
        batch_weights({"x": x, "y": y, "index": index, "weight": torch.ones(3) * 3}), [3.0] * 3
    )
    with pytest.raises(ValueError, match="3 weights for 2 samples"):
        batch_weights((x[:2], y[:2], index[:2], torch.ones(3)))


class DictItems(torch.utils.data.Dataset):
    """Digits-shaped dict items: the weight reaches the batch under "weight"."""

    def __init__(self, n: int = 256) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 64, generator=generator), torch.randint(0, 10, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i].reshape(1, 8, 8), "y": int(self.y[i])}


@pytest.mark.parametrize("weighting", ["mean", "normalized"])
def test_dict_batches_are_checked_the_same_way(weighting):
    data = pl.LightningDataModule.from_datasets(train_dataset=lp.IndexedDataset(DictItems()), batch_size=32)
    infobatch = lp.InfoBatch(delta=0.75)
    if weighting == "mean":
        fit(UserModel(weighting), infobatch, datamodule=infobatch.wrap(data))
        assert infobatch.fraction_skipped > 0
    else:
        with pytest.raises(ValueError, match="does not scale with the per-sample weights"):
            fit(UserModel(weighting), infobatch, datamodule=infobatch.wrap(data))


def test_the_length_check_can_run_before_any_fit():
    with pytest.raises(ValueError, match="never prunes"):
        lp.InfoBatch().check_length(2)
    lp.InfoBatch().check_length(3)


def test_a_collate_fn_that_drops_the_weights_is_refused():
    from torch.utils.data import DataLoader, default_collate

    class DropsWeights(pl.LightningDataModule):
        def train_dataloader(self):
            dataset = lp.IndexedDataset(
                torch.utils.data.TensorDataset(torch.randn(96, 64), torch.randint(0, 10, (96,)))
            )
            return DataLoader(
                dataset, batch_size=32, shuffle=True, collate_fn=lambda items: default_collate([i[:3] for i in items])
            )

    infobatch = lp.InfoBatch()
    with pytest.raises(ValueError, match=r"carries no weights.*check_weighting=False"):
        fit(UserModel(), infobatch, datamodule=infobatch.wrap(DropsWeights()))
