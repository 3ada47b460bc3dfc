"""Bad input fails early, with a message that names the problem and the fix."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from collector_harness import KnownLogitsModel, fit, make_labels
from torch.utils.data import DataLoader, TensorDataset

import lightning_prune as lp


def _fit_model(model: pl.LightningModule, loader: DataLoader, collectors, epochs: int = 2) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        callbacks=collectors,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
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


def test_samples_never_seen_get_the_intended_message_not_an_attribute_error():
    with pytest.raises(RuntimeError, match=r"of 37 samples were never seen in a training batch"):
        forgetting = lp.Forgetting()
        fit([forgetting], epochs=2, limit_train_batches=0.5)
        forgetting.scores


class _LabelSwapModel(KnownLogitsModel):
    """Corrupts the targets (or indices) of one later batch, as a broken dataset would."""

    def __init__(self, field: str, value: int, bad_batch: int = 3) -> None:
        super().__init__()
        self.field, self.value, self.bad_batch = field, value, bad_batch

    def on_train_batch_start(self, batch, batch_idx):
        if batch_idx == self.bad_batch:
            position = {"target": 1, "index": 2}[self.field]
            batch[position][0] = self.value


@pytest.mark.parametrize("collector", ["forgetting", "aum", "el2n", "tdds"])
@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("target", 7, ValueError, r"targets must lie in \[0, 5\).*\[\d, 7\]"),
        ("target", -2, ValueError, r"targets must lie in \[0, 5\).*\[-2, \d\]"),
        ("index", 99, IndexError, r"sample index 99 is outside the training set \[0, 37\)"),
    ],
    ids=["target-too-high", "target-negative", "index-too-high"],
)
def test_bad_labels_and_indices_in_a_later_batch_are_refused(collector, field, value, error, message):
    make = {
        "forgetting": lambda: lp.Forgetting(),
        "aum": lambda: lp.AUM(),
        "el2n": lambda: lp.EL2N(epochs=2),
        "tdds": lambda: lp.TDDS(trajectory=3, window=3, precision="float32"),
    }[collector]
    with pytest.raises(error, match=message):
        fit([make()], epochs=3, model=_LabelSwapModel(field, value))


def _checkpoint_after_two_epochs(tmp_path, collectors):
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Stop(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(collectors, epochs=4, extra_callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True), Stop()])
    return str(tmp_path / "last.ckpt")


@pytest.mark.parametrize(
    "changed",
    [
        lambda: lp.TDDS(trajectory=4, window=3, precision="float16"),
        lambda: lp.TDDS(trajectory=4, window=3, precision="float32", name="renamed"),
        lambda: lp.TDDS(trajectory=4, window=4, precision="float32"),
    ],
    ids=["precision", "name", "window"],
)
def test_resume_with_changed_collector_settings_fails_naming_both(tmp_path, changed):
    ckpt = _checkpoint_after_two_epochs(tmp_path, [lp.TDDS(trajectory=4, window=3, precision="float32")])
    collector = changed()
    with pytest.raises(
        ValueError, match=r"(?s)checkpoint holds state of.*TDDS.*no collector of this fit claims.*" + "TDDS"
    ):
        fit([collector], epochs=4, ckpt_path=ckpt, default_root_dir=tmp_path)


def test_collector_added_when_resuming_after_epoch_zero_fails(tmp_path):
    ckpt = _checkpoint_after_two_epochs(tmp_path, [])
    with pytest.raises(ValueError, match=r"(?s)Forgetting.*has no state in the checkpoint.*epoch 2"):
        fit([lp.Forgetting()], epochs=4, ckpt_path=ckpt, default_root_dir=tmp_path)


def test_resume_with_identical_collectors_still_works(tmp_path):
    ckpt = _checkpoint_after_two_epochs(tmp_path, [lp.Forgetting(), lp.TDDS(trajectory=4, window=3)])
    forgetting, tdds = lp.Forgetting(), lp.TDDS(trajectory=4, window=3)
    fit([forgetting, tdds], epochs=4, ckpt_path=ckpt, default_root_dir=tmp_path)
    assert forgetting.epochs_collected == 4 and tdds.epochs_collected == 4
