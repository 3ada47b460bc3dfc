"""Reference models: Classifier's (weighted) loss, metrics, schedule and CLI-friendliness; backbones."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from lightning_prune.data import DigitsDataModule, PrunedDataModule
from lightning_prune.models import Classifier, SmallCNN, cifar_resnet18
from lightning_prune.selection import Scores, select


def trainer(**kwargs) -> pl.Trainer:
    settings = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    settings.update(kwargs)
    return pl.Trainer(**settings)


def hand_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    log_probs = logits - logits.exp().sum(dim=1, keepdim=True).log()
    return -log_probs[torch.arange(len(targets)), targets]


@pytest.mark.filterwarnings("ignore:.*self.trainer. reference is not registered")
def test_training_step_loss_is_the_hand_computed_weighted_mean():
    torch.manual_seed(0)
    model = Classifier(nn.Linear(5, 3))
    x, y, index = torch.randn(6, 5), torch.tensor([0, 1, 2, 2, 1, 0]), torch.arange(6)
    w = torch.tensor([0.0, 0.5, 1.0, 0.25, 0.75, 0.1])
    ce = hand_ce(model(x), y)
    out = model.training_step((x, y, index, w), 0)
    assert set(out) == {"loss", "logits"} and out["logits"].shape == (6, 3)
    torch.testing.assert_close(out["loss"], (w * ce).sum() / w.sum())
    torch.testing.assert_close(model.training_step((x, y, index), 0)["loss"], ce.mean())
    torch.testing.assert_close(
        model.training_step({"x": x, "y": y, "index": index, "weight": w}, 0)["loss"], (w * ce).sum() / w.sum()
    )
    mean_variant = Classifier(model.backbone, weighted_loss="mean")
    torch.testing.assert_close(mean_variant.training_step((x, y, index, w), 0)["loss"], (w * ce).mean())
    zero = model.training_step((x, y, index, torch.zeros(6)), 0)["loss"]
    assert zero.detach().item() == 0.0


class CheckLoss(pl.Callback):
    """Recomputes each weighted batch's loss by hand from the logits the model returned."""

    def __init__(self) -> None:
        self.checked = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        x, y, index, w = batch
        ce = hand_ce(outputs["logits"].detach(), y)
        torch.testing.assert_close(outputs["loss"].detach(), (w * ce).sum() / w.sum())
        self.checked += 1


def test_selection_weights_reach_the_loss_through_the_trainer():
    dm = DigitsDataModule(batch_size=32)
    scores = Scores(np.random.default_rng(0).random(len(dm.train_dataset)), "toy", labels=dm.targets)
    selection = select(scores, 0.8, strategy="ccs", weights="importance")
    check = CheckLoss()
    trainer(max_steps=4, callbacks=[check], limit_val_batches=0).fit(
        Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10))),
        datamodule=PrunedDataModule(dm, selection, weighted=True),
    )
    assert check.checked == 4


def test_classifier_learns_digits_logs_metrics_and_anneals_lr():
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=32)
    model = Classifier(SmallCNN(width=8), lr=0.1)
    run = trainer(max_epochs=3)
    run.fit(model, datamodule=dm)
    scheduler = run.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == run.estimated_stepping_batches == 3 * 34
    assert run.optimizers[0].param_groups[0]["lr"] < 1e-3
    optimizer = run.optimizers[0]
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4
    assert {"val_acc", "val_loss", "train_loss"} <= set(run.callback_metrics)
    result = run.test(model, datamodule=dm, verbose=False)[0]
    assert 0.8 < result["test_acc"] <= 1.0 and result["test_loss"] > 0
    assert model.hparams.lr == 0.1 and "backbone" not in model.hparams


def test_classifier_arguments_are_checked():
    assert Classifier(SmallCNN(num_classes=7)).num_classes == 7
    with pytest.raises(ValueError, match="pass num_classes"):
        Classifier(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()))
    with pytest.raises(ValueError, match="scheduler='step' is not one of"):
        Classifier(SmallCNN(), scheduler="step")
    with pytest.raises(ValueError, match="weighted_loss='sum' is not one of"):
        Classifier(SmallCNN(), weighted_loss="sum")


def test_backbones_shapes():
    assert SmallCNN(num_classes=10)(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert isinstance(SmallCNN().fc, nn.Linear)
    net = cifar_resnet18(num_classes=100).eval()
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity) and net.fc.out_features == 100
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    # Full resolution in the first stage: the stem keeps 32x32.
    with torch.no_grad():
        assert net.maxpool(net.relu(net.bn1(net.conv1(torch.randn(1, 3, 32, 32))))).shape == (1, 64, 32, 32)


def test_lightning_cli_builds_the_pruned_run_from_class_paths(tmp_path, monkeypatch):
    from lightning.pytorch.cli import LightningCLI

    monkeypatch.setattr("sys.argv", ["lightning-prune"])
    dm = DigitsDataModule()
    path = select(Scores(np.arange(len(dm.train_dataset), dtype=float), "toy", labels=dm.targets), 0.5).save(
        tmp_path / "sel.npz"
    )
    cli = LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        save_config_kwargs={"overwrite": True},
        args=[
            "--model=lightning_prune.models.Classifier",
            "--model.backbone=lightning_prune.models.SmallCNN",
            "--model.lr=0.02",
            "--data=lightning_prune.data.PrunedDataModule",
            "--data.datamodule=lightning_prune.data.DigitsDataModule",
            "--data.datamodule.batch_size=32",
            f"--data.selection={path}",
            "--data.weighted=false",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
        ],
    )
    assert isinstance(cli.datamodule, PrunedDataModule) and len(cli.datamodule.selection) == 539
    assert cli.datamodule.datamodule.batch_size == 32 and cli.model.hparams.lr == 0.02
