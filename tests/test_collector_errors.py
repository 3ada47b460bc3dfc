"""Bad input fails early, with a message that names the problem and the fix."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lightning_prune as lp
from collector_harness import KnownLogitsModel, fit, make_labels


def _fit_model(model: pl.LightningModule, loader: DataLoader, collectors, epochs: int = 2) -> None:
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, callbacks=collectors, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, train_dataloaders=loader)


class _TupleModel(KnownLogitsModel):
    def training_step(self, batch, batch_idx):
        logits = self.head(self.features[self.current_epoch, : batch[0].shape[0]])
        return {"loss": self.dummy.pow(2).sum(), "logits": logits}


def test_batch_without_indices_names_indexed_dataset():
    loader = DataLoader(TensorDataset(torch.zeros(37, 1), make_labels()), batch_size=4)
    with pytest.raises(ValueError, match="IndexedDataset"):
        _fit_model(_TupleModel(), loader, [lp.Forgetting()])


class _LossOnlyModel(KnownLogitsModel):
    def training_step(self, batch, batch_idx):
        return self.dummy.pow(2).sum()


def test_training_step_without_logits_says_how_to_return_them():
    from collector_harness import make_loader

    with pytest.raises(ValueError, match=r"'logits'.*recompute_logits"):
        _fit_model(_LossOnlyModel(), make_loader(), [lp.TDDS(trajectory=3, window=3)], epochs=3)


def test_recompute_logits_adapter_scores_a_loss_only_model():
    from collector_harness import make_loader

    class Model(_LossOnlyModel):
        def forward(self, x):  # eval-mode forward from the batch inputs
            return self.head(self.features[self.current_epoch, : x.shape[0]])

    forgetting = lp.Forgetting(adapter=lp.recompute_logits)
    _fit_model(Model(), make_loader(), [forgetting])
    assert forgetting.scores.values.shape == (37,)


class _NaNModel(KnownLogitsModel):
    def __init__(self, bad_batch: int) -> None:
        super().__init__()
        self.bad_batch = bad_batch

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        if batch_idx == self.bad_batch:
            out["logits"] = out["logits"].clone()
            out["logits"][0, 0] = float("nan")
        return out


@pytest.mark.parametrize("bad_batch", [0, 5], ids=["first-batch", "later-batch"])
def test_nan_logits_are_refused(bad_batch):
    from collector_harness import make_loader

    with pytest.raises(FloatingPointError, match="NaN or inf logits in epoch 0"):
        _fit_model(_NaNModel(bad_batch), make_loader(), [lp.TDDS(trajectory=3, window=3)], epochs=3)


def test_window_larger_than_trajectory():
    with pytest.raises(ValueError, match=r"window \(12\) is larger than the trajectory \(10\)"):
        lp.TDDS(trajectory=10, window=12)


@pytest.mark.parametrize("kwargs", [{"window": 2}, {"decay": 0.0}, {"precision": "int8"}, {"dispersion": "std"}])
def test_bad_tdds_settings(kwargs):
    with pytest.raises(ValueError, match="TDDS"):
        lp.TDDS(**{"trajectory": 10, "window": 5, **kwargs})


def test_trajectory_longer_than_max_epochs_fails_before_training():
    with pytest.raises(ValueError, match=r"TDDS\(trajectory=30\) needs at least 30 training epochs.*max_epochs=5"):
        fit([lp.TDDS(trajectory=30, window=10)], epochs=5)


def test_index_outside_the_training_set():
    from collector_harness import make_loader

    with pytest.raises(IndexError, match=r"outside the training set \[0, 10\)"):
        _fit_model(KnownLogitsModel(), make_loader(), [lp.Forgetting(num_samples=10)])


def test_scores_before_fit_and_too_short_runs():
    tdds = lp.TDDS(trajectory=8, window=4)
    with pytest.raises(RuntimeError, match="run trainer.fit"):
        tdds.scores

    class StopEarly(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                trainer.should_stop = True

    fit([tdds], extra_callbacks=[StopEarly()])
    with pytest.raises(RuntimeError, match="collected 2 epoch.*at least 4"):
        tdds.scores


def test_resuming_with_other_settings_is_refused():
    tdds = lp.TDDS(trajectory=8, window=4)
    fit([tdds])
    other = lp.TDDS(trajectory=8, window=5)
    with pytest.raises(ValueError, match="checkpoint's settings"):
        other.load_state_dict(tdds.state_dict())


def test_a_crashed_resumed_fit_does_not_make_the_next_fit_continue(tmp_path):
    tdds = lp.TDDS(trajectory=4, window=3, precision="float32")
    fit([tdds], epochs=4)
    fresh = lp.TDDS(trajectory=4, window=3, precision="float32")
    fresh.load_state_dict(tdds.state_dict())  # as Lightning does when resuming, then the fit crashes

    class Crash(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        fit([fresh], epochs=4, extra_callbacks=[Crash()])
    with pytest.warns(UserWarning, match="earlier fit"):
        fit([fresh], epochs=4)
    assert fresh.epochs_collected == 4
