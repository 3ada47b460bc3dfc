"""AdaPruner: target reached on real data, mask keyed by sample index, exact loss terms, schedules,
warm-up, non-classification losses, DDP, resume, and clear errors on bad input."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, TensorDataset

from lightning_prune.adapruner import AdaPruner
from lightning_prune.data import IndexedDataset
from lightning_prune.selection.files import label_fingerprint
from lightning_prune.selection.selection import Selection

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(autouse=True)
def one_thread():
    # The models here are tiny: a second intra-op thread only adds contention on a shared 2-core box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    features, labels = load_digits(return_X_y=True)
    x = torch.tensor(features / 16.0, dtype=torch.float32)
    y = torch.tensor(labels)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = order[:1500], order[1500:]
    return x[train], y[train], x[val], y[val]


def mlp(hidden: int = 128) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def trainer(max_epochs: int, **kwargs) -> L.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("logger", False)
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


class EpochShuffle(Sampler[int]):
    """A shuffling sampler whose order depends only on (seed, epoch): Lightning calls set_epoch, so a
    resumed run sees the same order as an uninterrupted one."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class Record(L.Callback):
    """Records alpha, the kept fraction and the training_step outputs after every batch."""

    def __init__(self) -> None:
        self.alphas: list[float] = []
        self.epochs: list[int] = []
        self.outputs: list[dict] = []
        self.masks_at_epoch_end: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.alphas.append(pl_module.alpha)
        self.epochs.append(trainer.current_epoch)
        if batch_idx == 0:
            self.outputs.append(outputs)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.masks_at_epoch_end.append(pl_module.mask.detach().clone())


# ---------------------------------------------------------------------- the method works
def test_reaches_target_on_digits_and_selects_on_validation(digits, caplog, tmp_path):
    x, y, xv, yv = digits
    L.seed_everything(0, verbose=False)
    pruner = AdaPruner(mlp(), num_samples=len(y), keep_ratio=0.6, warmup_epochs=2, lr=0.05)
    record = Record()
    fit_trainer = trainer(12, callbacks=[record])
    with caplog.at_level(logging.INFO):
        fit_trainer.fit(
            pruner,
            DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=64, shuffle=True),
            DataLoader(TensorDataset(xv, yv), batch_size=256),
        )

    assert abs(pruner.kept_fraction - 0.6) <= 0.02
    assert pruner.converged and pruner.frozen and pruner.converged_epoch is not None
    assert sum("within 0.02 of the target 0.6" in message for message in caplog.messages) == 1
    assert pruner.alpha > 0.1

    selection = pruner.selection()
    assert isinstance(selection, Selection) and selection.method == "adapruner"
    assert np.array_equal(selection.indices, np.flatnonzero(pruner.mask.detach().numpy() > 0))
    assert abs(selection.keep_ratio - 0.6) <= 0.02
    hp = selection.hparams
    assert hp["keep_ratio"] == 0.6 and hp["keep_ratio_reached"] == pytest.approx(selection.keep_ratio)
    assert hp["converged"] and hp["alpha_reached"] == pytest.approx(pruner.alpha)
    assert (hp["epochs"], hp["warmup_epochs"], hp["mask_epochs"]) == (12, 2, 10)
    assert selection.label_fingerprint == label_fingerprint(y.numpy())
    loaded = Selection.load(selection.save(tmp_path / "adapruner.npz"))
    assert np.array_equal(loaded.indices, selection.indices)
    assert loaded.hparams["keep_ratio_reached"] == pytest.approx(selection.keep_ratio)

    metrics = fit_trainer.callback_metrics
    for key in (
        "val_loss",
        "val_acc",
        "kept_fraction_epoch",
        "loss_classification_epoch",
        "loss_selection_epoch",
        "loss_compression_epoch",
        "alpha_epoch",
        "lambda_epoch",
        "converged",
    ):
        assert key in metrics, key
    assert float(metrics["val_acc"]) > 0.85  # the backbone learned while the mask trained
    # training_step hands its logits to callbacks, so lightning-prune collectors can be attached too.
    first = record.outputs[-1]
    assert set(first) >= {"loss", "logits"} and first["logits"].shape == (64, 10)

    # The mask froze before the last validation, so the best validated mask is the frozen one; a test
    # run afterwards reports metrics but never changes which mask is best.
    best = pruner.selection("best")
    assert np.array_equal(best.indices, selection.indices) and best.hparams["mask"] == "best"
    best_epoch = best.hparams["best_epoch"]
    fit_trainer.test(pruner, DataLoader(TensorDataset(xv[:50], 9 - yv[:50]), batch_size=50), verbose=False)
    assert "test_acc" in fit_trainer.callback_metrics
    assert pruner.selection("best").hparams["best_epoch"] == best_epoch


class LossIsInput(Dataset):
    """Sample i's only feature is the loss it will have: 1e-4 (easy) for the indices in `easy`, 1.0
    otherwise. Targets are dummies; the per-sample loss is the (frozen, identity) backbone's output."""

    def __init__(self, size: int, easy: np.ndarray) -> None:
        self.values = torch.ones(size, 1)
        self.values[torch.as_tensor(easy)] = 1e-4

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i):
        return self.values[i], 0


def identity_backbone() -> nn.Module:
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.zero_()
    layer.requires_grad_(False)  # a frozen backbone: only the mask trains
    return layer


def test_mask_follows_sample_indices_through_a_shuffled_loader():
    # Easy samples (small loss) are pushed out fastest by the selection term. They sit at random
    # indices and the loader shuffles every epoch: only a mask keyed by sample index can end up
    # dropping exactly them; a mask keyed by batch position would drop a random half.
    size = 200
    easy = np.sort(np.random.default_rng(1).choice(size, size // 2, replace=False))
    L.seed_everything(0, verbose=False)
    pruner = AdaPruner(
        identity_backbone(),
        num_samples=size,
        keep_ratio=0.5,
        mask_lr=0.3,
        per_sample_loss=lambda out, _: out.squeeze(-1),
    )
    loader = DataLoader(IndexedDataset(LossIsInput(size, easy)), batch_size=20, shuffle=True)
    trainer(15).fit(pruner, loader)
    dropped = np.setdiff1d(np.arange(size), pruner.selection().indices)
    # Batch-position indexing would drop about half of the easy samples (~50 of 100).
    assert abs(len(dropped) - 100) <= 4
    assert len(np.intersect1d(dropped, easy)) >= 96


def test_gradient_lands_on_the_batch_sample_indices():
    pruner = AdaPruner(nn.Linear(3, 4), num_samples=12, keep_ratio=0.5)
    torch.manual_seed(0)
    x, y = torch.randn(3, 3), torch.tensor([0, 3, 1])
    indices = torch.tensor([7, 2, 11])
    terms = pruner.loss_terms(pruner(x), y, indices, alpha=1.0)
    terms["loss"].backward()
    grad = pruner.mask.grad
    assert set(torch.nonzero(grad).flatten().tolist()) == {2, 7, 11}
    # Each index gets its own sample's gradient: recompute sample 1 (index 2) alone.
    losses = terms["sample_loss"].detach()
    sigma = terms["sigma"].detach()
    lam = terms["lambda"]
    d_sigma = (losses - torch.log(losses + 1e-5) + 2 * lam * (sigma.mean() - 0.5)) / 3
    expected = d_sigma * 1.0 * sigma * (1 - sigma)
    assert torch.allclose(grad[indices], expected, atol=1e-6)


# ---------------------------------------------------------------------- the loss, exactly
@pytest.mark.parametrize("rule, scale", [("official", None), ("paper", None), ("official", 20.0)])
def test_loss_terms_equal_hand_computed_values(rule, scale):
    mask = torch.tensor([1.0, -0.5, 2.0, 0.3, -1.0, 0.8])
    pruner = AdaPruner(nn.Identity(), num_samples=6, keep_ratio=0.5, lambda_rule=rule, lambda_scale=scale)
    with torch.no_grad():
        pruner.mask.copy_(mask)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]])
    targets = torch.tensor([0, 2, 0])
    indices = torch.tensor([4, 0, 2])
    alpha = 1.7
    terms = {k: v.detach() for k, v in pruner.loss_terms(logits, targets, indices, alpha=alpha).items()}

    logit_rows = logits.double().numpy()
    log_softmax = logit_rows - np.log(np.exp(logit_rows).sum(axis=1, keepdims=True))
    ce = -log_softmax[np.arange(3), targets.numpy()]
    m = mask.double().numpy()[indices.numpy()]
    sigma = 1.0 / (1.0 + np.exp(-alpha * m))
    kept = 4 / 6  # entries > 0: 1.0, 2.0, 0.3, 0.8
    if rule == "official":
        lam = 1.0 + (scale or 50.0) * abs(kept - 0.5)
    else:
        lam = 100.0 * abs(kept - 0.5)
    classification = np.mean(ce * sigma)
    selection = np.mean(-np.log(ce + 1e-5) * sigma)
    compression = lam * (np.mean(sigma) - 0.5) ** 2
    assert float(terms["kept_fraction"]) == pytest.approx(kept)
    assert float(terms["lambda"]) == pytest.approx(lam, rel=1e-6)
    assert float(terms["classification"]) == pytest.approx(classification, rel=1e-5)
    assert float(terms["selection"]) == pytest.approx(selection, rel=1e-5)
    assert float(terms["compression"]) == pytest.approx(compression, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(classification + selection + compression, rel=1e-5)


def test_only_the_classification_term_trains_the_backbone():
    backbone = nn.Linear(5, 3)
    pruner = AdaPruner(backbone, num_samples=8, keep_ratio=0.5)
    x, y, idx = torch.randn(4, 5), torch.tensor([0, 1, 2, 0]), torch.tensor([1, 3, 5, 7])
    params = list(backbone.parameters())
    for name, reaches_backbone in (("classification", True), ("selection", False), ("compression", False)):
        term = pruner.loss_terms(pruner(x), y, idx, alpha=2.0)[name]
        grads = torch.autograd.grad(term, params + [pruner.mask], allow_unused=True)
        backbone_norm = sum(float(g.abs().sum()) for g in grads[:-1] if g is not None)
        assert (backbone_norm > 0) == reaches_backbone, name
        assert float(grads[-1].abs().sum()) > 0, name  # every term trains the mask


# ---------------------------------------------------------------------- schedules and warm-up
def small_problem(size: int = 64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    return IndexedDataset(TensorDataset(x, y))


def test_alpha_rises_linearly_per_step_and_per_epoch():
    data = small_problem()
    for schedule in ("step", "epoch"):
        pruner = AdaPruner(
            nn.Linear(4, 2),
            num_samples=64,
            keep_ratio=0.5,
            alpha=(0.5, 4.0),
            alpha_schedule=schedule,
            pause_alpha_below_target=False,
            stop_at_target=False,
            warmup_epochs=1,
        )
        record = Record()
        trainer(4, callbacks=[record]).fit(pruner, DataLoader(data, batch_size=16))
        alphas = np.array(record.alphas)
        epochs = np.array(record.epochs)
        assert np.all(alphas[epochs == 0] == 0.5)  # warm-up: mask frozen, alpha not started
        mask_alphas = alphas[epochs >= 1]
        if schedule == "step":
            assert mask_alphas[0] == pytest.approx(0.5) and mask_alphas[-1] == pytest.approx(4.0)
            assert np.allclose(np.diff(mask_alphas), 3.5 / 11, atol=1e-5)
        else:
            per_epoch = [np.unique(alphas[epochs == e]) for e in (1, 2, 3)]
            assert all(len(values) == 1 for values in per_epoch)
            assert np.allclose([v[0] for v in per_epoch], [0.5, 2.25, 4.0])


@pytest.mark.parametrize("start_kept, expect_rise", [(0.25, False), (1.0, True)])
def test_alpha_pauses_while_kept_fraction_is_below_target(start_kept, expect_rise):
    pruner = AdaPruner(
        nn.Linear(4, 2), num_samples=64, keep_ratio=0.5, alpha=(0.5, 4.0), mask_lr=0.0, stop_at_target=False
    )
    with torch.no_grad():
        pruner.mask[: int(64 * (1 - start_kept))] = -1.0  # mask_lr=0 keeps this kept fraction all run
    record = Record()
    trainer(2, callbacks=[record]).fit(pruner, DataLoader(small_problem(), batch_size=16))
    assert pruner.kept_fraction == start_kept
    if expect_rise:
        assert record.alphas[-1] == pytest.approx(4.0)
    else:
        assert set(record.alphas) == {0.5}


def test_warmup_trains_backbone_with_mask_frozen():
    backbone = nn.Linear(4, 2)
    before = backbone.weight.detach().clone()
    pruner = AdaPruner(backbone, num_samples=64, keep_ratio=0.5, warmup_epochs=2, mask_lr=50.0)
    record = Record()
    trainer(3, callbacks=[record]).fit(pruner, DataLoader(small_problem(), batch_size=16, shuffle=True))
    assert torch.equal(record.masks_at_epoch_end[0], torch.ones(64))
    assert torch.equal(record.masks_at_epoch_end[1], torch.ones(64))
    assert not torch.equal(record.masks_at_epoch_end[2], torch.ones(64))  # the mask epoch moved it
    assert not torch.equal(backbone.weight.detach(), before)
    assert pruner.selection().hparams["mask_epochs"] == 1


def test_selection_before_mask_training_is_an_error():
    pruner = AdaPruner(nn.Linear(4, 2), num_samples=64, keep_ratio=0.5, warmup_epochs=1)
    with pytest.raises(RuntimeError, match="not trained its mask yet"):
        pruner.selection()
    with pytest.raises(ValueError, match="leaves no epoch to train the mask"):
        trainer(1).fit(pruner, DataLoader(small_problem(), batch_size=16))


def test_from_pretrained_backbone_loads_lightning_and_plain_checkpoints(tmp_path):
    trained = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    lightning_style = {"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}, "epoch": 3}
    torch.save(lightning_style, tmp_path / "full.ckpt")
    torch.save(trained.state_dict(), tmp_path / "plain.pt")
    for path in ("full.ckpt", "plain.pt"):
        fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        pruner = AdaPruner.from_pretrained_backbone(fresh, tmp_path / path, num_samples=64, keep_ratio=0.5)
        assert pruner.warmup_epochs == 0
        for key, value in trained.state_dict().items():
            assert torch.equal(pruner.backbone.state_dict()[key], value), (path, key)
    other = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))  # has running_mean, which the file lacks
    with pytest.raises(ValueError, match="do not match the backbone's.*prefix="):
        AdaPruner.from_pretrained_backbone(other, tmp_path / "plain.pt", num_samples=4, keep_ratio=0.5)


# ---------------------------------------------------------------------- other tasks and batch shapes
def test_regression_with_a_squared_error_per_sample_loss(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=generator)
    target = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 1.5]) + 0.3 * torch.randn(300, generator=generator)
    L.seed_everything(0, verbose=False)
    pruner = AdaPruner(
        nn.Linear(5, 1),
        num_samples=300,
        keep_ratio=0.7,
        lr=0.02,
        warmup_epochs=2,
        per_sample_loss=lambda out, y: (out.squeeze(-1) - y) ** 2,
    )
    fit_trainer = trainer(12, logger=CSVLogger(tmp_path, name="run"), log_every_n_steps=5)
    fit_trainer.fit(
        pruner,
        DataLoader(IndexedDataset(TensorDataset(x, target)), batch_size=20, shuffle=True),
        DataLoader(TensorDataset(x[:60], target[:60]), batch_size=60),
    )
    assert pruner.converged and abs(pruner.kept_fraction - 0.7) <= 0.02
    assert "val_loss" in fit_trainer.callback_metrics and "val_acc" not in fit_trainer.callback_metrics
    with open(next(tmp_path.rglob("metrics.csv"))) as handle:
        columns = set(handle.readline().strip().split(","))
    assert columns >= {
        "train_loss_step",
        "loss_selection_step",
        "kept_fraction_step",
        "alpha_step",
        "lambda_step",
        "loss_selection_epoch",
        "kept_fraction_epoch",
        "alpha_epoch",
        "val_loss",
    }
    selection = pruner.selection()
    assert selection.label_fingerprint is None  # float targets are not class labels
    assert abs(selection.keep_ratio - 0.7) <= 0.02


class DictItems(Dataset):
    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return {"image": x, "label": y}


def test_dict_batches_and_given_labels():
    base = small_problem().dataset
    labels = base.tensors[1].numpy()
    pruner = AdaPruner(nn.Linear(4, 2), num_samples=64, keep_ratio=0.5, labels=labels, mask_lr=5.0)
    trainer(3).fit(pruner, DataLoader(IndexedDataset(DictItems(base)), batch_size=16, shuffle=True))
    assert not torch.equal(pruner.mask.detach(), torch.ones(64))
    assert pruner.selection().label_fingerprint == label_fingerprint(labels)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("keep_ratio", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_keep_ratio_outside_open_unit_interval_is_rejected(keep_ratio):
    with pytest.raises(ValueError, match="keep_ratio must lie strictly between 0 and 1"):
        AdaPruner(nn.Linear(4, 2), num_samples=10, keep_ratio=keep_ratio)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_samples": 0}, "num_samples must be a positive integer"),
        ({"alpha": (5.0, 0.1)}, "0 < start <= end"),
        ({"alpha": 3.0}, "pair"),
        ({"tolerance": 0.0}, "tolerance must lie strictly between"),
        ({"alpha_schedule": "iteration"}, "alpha_schedule must be one of"),
        ({"labels": [0, 1, 2]}, "one label per training sample"),
        ({"warmup_epochs": -1}, "warmup_epochs must be an integer"),
        ({"mask_lr": -1.0}, "mask_lr must be a finite number"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    arguments = {"num_samples": 10, "keep_ratio": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        AdaPruner(nn.Linear(4, 2), **arguments)


def test_bad_batches_and_losses_fail_clearly():
    data = small_problem()
    with pytest.raises(ValueError, match=r"index 63, outside the mask's range \[0, 50\).*num_samples"):
        trainer(1).fit(
            AdaPruner(nn.Linear(4, 2), num_samples=50, keep_ratio=0.5), DataLoader(ShiftedIndices(data), batch_size=64)
        )
    with pytest.raises(ValueError, match="training set has 64 samples.*num_samples=len"):
        trainer(1).fit(AdaPruner(nn.Linear(4, 2), num_samples=50, keep_ratio=0.5), DataLoader(data, batch_size=16))
    with pytest.raises(ValueError, match="must carry sample indices.*IndexedDataset"):
        trainer(1).fit(
            AdaPruner(nn.Linear(4, 2), num_samples=64, keep_ratio=0.5), DataLoader(data.dataset, batch_size=16)
        )
    with pytest.raises(ValueError, match=r"returned shape \(16, 2\).*one loss per sample"):
        trainer(1).fit(
            AdaPruner(nn.Linear(4, 2), num_samples=64, keep_ratio=0.5, per_sample_loss=lambda out, y: out),
            DataLoader(data, batch_size=16),
        )
    with pytest.raises(ValueError, match="negative values"):
        trainer(1).fit(
            AdaPruner(nn.Linear(4, 2), num_samples=64, keep_ratio=0.5, per_sample_loss=lambda out, y: out[:, 0] - 10),
            DataLoader(data, batch_size=16),
        )


class ShiftedIndices(Dataset):
    """50 items whose indices run 14..63: the right size, but indices beyond num_samples=50."""

    def __init__(self, data: IndexedDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return 50

    def __getitem__(self, i):
        x, y, _ = self.data[i]
        return x, y, i + 14


# ---------------------------------------------------------------------- indices the data never reaches
class IndexedStream(IterableDataset):
    """``small_problem`` as a stream without a length, so no size check can see how many samples it has."""

    def __init__(self, data: IndexedDataset) -> None:
        self.data = data

    def __iter__(self):
        return (self.data[i] for i in range(len(self.data)))


def test_num_samples_beyond_the_data_set_is_refused_at_fit_start():
    # The reported bug: 64 samples, a mask for 128; it selected the 64 indices no batch ever held.
    pruner = AdaPruner(nn.Linear(4, 2), num_samples=128, keep_ratio=0.5)
    refused = r"num_samples=128\).*training set has 64 samples.*num_samples=len\(train_set\)"
    with pytest.raises(ValueError, match=refused):
        trainer(3).fit(pruner, DataLoader(small_problem(), batch_size=16))
    assert int(pruner._mask_steps) == 0  # refused before the first step


def test_indices_never_seen_in_the_first_epoch_are_refused_at_its_end():
    # A stream has no length to check up front: the indices seen in epoch 0 tell instead.
    pruner = AdaPruner(nn.Linear(4, 2), num_samples=128, keep_ratio=0.5)
    fit_trainer = trainer(3, max_steps=100)
    refused = r"num_samples=128\).*only 64 of the 128.*never seen: 64\.\.127.*num_samples=len"
    with pytest.raises(ValueError, match=refused):
        fit_trainer.fit(pruner, DataLoader(IndexedStream(small_problem()), batch_size=16))
    assert fit_trainer.current_epoch == 0  # raised at the end of the first epoch, not later


def test_partial_epochs_are_refused_with_a_full_epoch_hint():
    pruner = AdaPruner(nn.Linear(4, 2), num_samples=64, keep_ratio=0.5)
    with pytest.raises(ValueError, match=r"only 32 of the 64.*2 of the loader's 4 batches.*train on full epochs"):
        trainer(3, limit_train_batches=0.5).fit(pruner, DataLoader(small_problem(), batch_size=16))


def test_selection_never_returns_an_index_no_batch_held():
    # drop_last without shuffling never shows the last 6 samples; the first epoch cannot tell that
    # from shuffled drop_last (whose dropped samples come back later), so selection() refuses.
    data = IndexedDataset(TensorDataset(torch.randn(70, 4), torch.randint(0, 2, (70,))))
    pruner = AdaPruner(nn.Linear(4, 2), num_samples=70, keep_ratio=0.5, mask_lr=5.0)
    trainer(2).fit(pruner, DataLoader(data, batch_size=16, drop_last=True))
    with pytest.raises(RuntimeError, match=r"6 of the 70 indices.*never appeared in a training batch.*64\.\.69"):
        pruner.selection()
    # What was (not) seen travels with the checkpoint.
    checkpoint: dict = {}
    pruner.on_save_checkpoint(checkpoint)
    restored = AdaPruner(nn.Linear(4, 2), num_samples=70, keep_ratio=0.5)
    restored.load_state_dict(pruner.state_dict())
    restored.on_load_checkpoint(checkpoint)
    with pytest.raises(RuntimeError, match="never appeared in a training batch"):
        restored.selection()


# ---------------------------------------------------------------------- DDP and resume
@pytest.mark.slow
def test_two_process_ddp_keeps_masks_identical(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_adapruner_worker.py"), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0, rank1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    # Each rank was dealt other samples, yet the masks are equal bit for bit.
    assert len(np.intersect1d(rank0["seen"], rank1["seen"])) == 0
    assert not np.all(rank0["mask"] == 1.0)
    assert np.array_equal(rank0["mask"], rank1["mask"])
    assert np.array_equal(rank0["indices"], rank1["indices"])
    assert float(rank0["alpha"]) == float(rank1["alpha"]) and bool(rank0["frozen"]) == bool(rank1["frozen"])
    # Labels recorded on each rank are merged, so both know the full training set's fingerprint.
    assert str(rank0["fingerprint"]) == str(rank1["fingerprint"]) == str(rank0["expected_fingerprint"])


@pytest.mark.slow
def test_two_process_ddp_refuses_unseen_indices_on_every_rank(tmp_path):
    # Each rank streams its own 200 of 400 samples to a mask for 500: only the merged view knows that
    # 100 indices were never seen, and a rank that raised alone would leave the other one hanging.
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_adapruner_worker.py"), str(tmp_path), "unseen"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    messages = [(tmp_path / f"rank{rank}_error.txt").read_text() for rank in (0, 1)]
    assert messages[0] == messages[1]
    assert "only 400 of the 500" in messages[0] and "never seen: 400..499" in messages[0]


class Interrupt(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 2:  # the end-of-epoch-1 checkpoint is on disk by now
            raise KeyError("simulated crash")


def test_resume_from_checkpoint_equals_uninterrupted_run(digits, tmp_path):
    x, y, xv, yv = digits
    x, y = x[:600], y[:600]

    def run(callbacks, ckpt_path=None, **kwargs) -> AdaPruner:
        L.seed_everything(0, verbose=False)
        pruner = AdaPruner(mlp(64), num_samples=600, keep_ratio=0.5, warmup_epochs=1, lr=0.05, mask_lr=0.5)
        loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=50, sampler=EpochShuffle(600))
        trainer(5, callbacks=callbacks, **kwargs).fit(
            pruner, loader, DataLoader(TensorDataset(xv, yv), batch_size=300), ckpt_path=ckpt_path
        )
        return pruner

    reference = run([])
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_on_train_epoch_end=True)
    with pytest.raises(KeyError, match="simulated crash"):
        run([checkpoint, Interrupt()], enable_checkpointing=True)
    # The checkpoint alone gives a usable pruner: mask, schedule state and recorded labels travel in it.
    restored = AdaPruner.load_from_checkpoint(tmp_path / "last.ckpt", backbone=mlp(64))
    assert restored.keep_ratio == 0.5 and restored.warmup_epochs == 1
    assert restored.selection().hparams["epochs"] == 2
    assert restored.selection().label_fingerprint == label_fingerprint(y.numpy())
    # ... and its backbone can seed another AdaPruner (the "backbone." prefix is found by itself).
    seeded = AdaPruner.from_pretrained_backbone(mlp(64), tmp_path / "last.ckpt", num_samples=600, keep_ratio=0.3)
    assert torch.equal(seeded.backbone[0].weight, restored.backbone[0].weight)
    assert torch.equal(seeded.mask, torch.ones(600))
    resumed = run([], ckpt_path=tmp_path / "last.ckpt")

    assert reference.frozen and reference.converged_epoch >= 2  # it froze after the resume point
    assert torch.equal(resumed.mask, reference.mask)
    for name, buffer in reference.named_buffers():
        assert torch.equal(dict(resumed.named_buffers())[name], buffer), name
    pairs = zip(reference.backbone.named_parameters(), resumed.backbone.named_parameters(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    assert np.array_equal(resumed.selection().indices, reference.selection().indices)
    assert resumed.selection().label_fingerprint == reference.selection().label_fingerprint is not None
    assert resumed.selection("best").hparams["best_epoch"] == reference.selection("best").hparams["best_epoch"]
    assert math.isfinite(resumed.selection("best").hparams["best_value"])


class CrashMidFirstEpoch(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx == 3:  # the step-2 checkpoint is on disk by now
            raise KeyError("simulated crash")


def test_resume_in_the_middle_of_the_first_epoch_does_not_refuse_seen_indices(tmp_path):
    # Resumed at batch 2 of epoch 0, the loader starts over and only its first two batches run: those
    # are the indices the checkpoint already holds. The resumed epoch is partial, so the check waits
    # for the next full epoch instead of refusing the samples the lost half of epoch 0 would have shown.
    # The same pruner object resumes, so nothing left from the crashed fit may count either.
    L.seed_everything(0, verbose=False)
    pruner = AdaPruner(nn.Linear(4, 2), num_samples=64, keep_ratio=0.5, mask_lr=5.0)
    loader = DataLoader(small_problem(), batch_size=16, sampler=EpochShuffle(64))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    with pytest.raises(KeyError, match="simulated crash"):
        trainer(3, callbacks=[checkpoint, CrashMidFirstEpoch()], enable_checkpointing=True).fit(pruner, loader)
    trainer(3).fit(pruner, loader, ckpt_path=tmp_path / "epoch=0-step=2.ckpt")
    assert pruner.trainer.current_epoch == 3 and len(pruner.selection().indices) > 0
