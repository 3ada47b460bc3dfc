"""Dynamic pruning under what a Lightning user turns on: checkpoints taken mid-epoch (the resumed epoch
serves exactly the rest of its plan), mixed precision, max_steps, val_check_interval, gradient
accumulation, a step-based schedule of their own, worker processes and a static selection underneath.
Each works here or is refused naming the fix (tests/test_infobatch_contract.py pins the refusals of
step-counted schedules, binding max_steps and too long an integer val_check_interval)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import lightning_prune as lp

N, BATCH, EPOCHS = 96, 16, 5


def regression_set() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, 5, generator=generator)
    return TensorDataset(x, x @ torch.linspace(-1, 1, 5) + 0.1 * torch.randn(N, generator=generator))


def data(batch_size: int = BATCH, **loader) -> pl.LightningDataModule:
    return pl.LightningDataModule.from_datasets(
        train_dataset=lp.IndexedDataset(regression_set()), batch_size=batch_size, **loader
    )


class KnownLoss(pl.LightningModule):
    """Sample i's loss in epoch t is a fixed number whatever the batch order or an interruption."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.rand(EPOCHS, N, generator=torch.Generator().manual_seed(5)) * 3)
        self.dummy = nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return lp.weighted_outputs(self.table[self.current_epoch, batch[2]] * self.dummy.pow(2), batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # the losses stay the table's


class Regressor(pl.LightningModule):
    def __init__(self, schedule: str = "cosine") -> None:
        super().__init__()
        self.net = nn.Linear(5, 1)
        self.schedule = schedule

    def training_step(self, batch, batch_idx):
        per_sample = F.mse_loss(self.net(batch[0]).squeeze(1), batch[1], reduction="none")
        return lp.weighted_outputs(per_sample, batch)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
        if self.schedule == "warmup":  # a user's own shape, in the fraction of training done
            shape = lambda progress: min(1.0, progress / 0.2) * (1.0 - progress)  # noqa: E731
            scheduler = lp.progress_schedule(optimizer, self.trainer, shape)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return {"optimizer": optimizer, "lr_scheduler": lp.cosine_schedule(optimizer, self.trainer)}


class Record(pl.Callback):
    """Every trained batch as (epoch, global step after it, indices, weights)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, list[int], list[float]]] = []
        self.lr: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rows.append((trainer.current_epoch, trainer.global_step, batch[2].tolist(), batch[3].tolist()))
        self.lr.append(trainer.optimizers[0].param_groups[0]["lr"])

    def served(self) -> list[tuple[int, list[int], list[float]]]:
        return [(epoch, indices, weights) for epoch, _, indices, weights in self.rows]


class CrashAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def trainer_for(*callbacks, epochs=EPOCHS, **settings) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **{"enable_checkpointing": False, **settings},
    )


PLANNERS = {
    "infobatch": lambda: lp.InfoBatch(prune_ratio=0.5, delta=0.8, seed=1),
    "rs2": lambda: lp.RS2(prune_ratio=0.4, seed=1),
}


# ---------------------------------------------------------------------------------------- mid-epoch checkpoints
@pytest.mark.parametrize("method", sorted(PLANNERS))
@pytest.mark.parametrize("save_at", [9, 14])  # inside pruned epochs of both methods, not at their ends
def test_a_mid_epoch_checkpoint_resumes_exactly_the_rest_of_the_epochs_plan(tmp_path, method, save_at):
    reference, uninterrupted = Record(), PLANNERS[method]()
    trainer_for(uninterrupted, reference).fit(KnownLoss(), datamodule=uninterrupted.wrap(data()))
    steps = [step for _, step, _, _ in reference.rows]
    epoch_of_save = reference.rows[steps.index(save_at)][0]
    assert steps.index(save_at) + 1 not in [sum(1 for r in reference.rows if r[0] <= e) for e in range(EPOCHS)]

    record, planner = Record(), PLANNERS[method]()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=save_at, save_top_k=-1)
    crashing = trainer_for(planner, record, checkpoint, CrashAtStep(save_at + 2), enable_checkpointing=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit(KnownLoss(), datamodule=planner.wrap(data()))
    (path,) = [p for p in tmp_path.iterdir() if f"step={save_at}" in p.name]
    record.rows = [row for row in record.rows if row[1] <= save_at]  # what the checkpoint holds

    resumed = PLANNERS[method]()
    trainer_for(resumed, record).fit(KnownLoss(), datamodule=resumed.wrap(data()), ckpt_path=str(path))
    assert record.served() == reference.served()  # the same batches, in order, with the same weights
    assert resumed.served == uninterrupted.served and resumed.fraction_skipped == uninterrupted.fraction_skipped
    assert epoch_of_save >= 1
    if method == "infobatch":
        np.testing.assert_array_equal(resumed.scores.values, uninterrupted.scores.values)
        assert resumed.loss_origin == "training_step's 'loss_per_sample'"


@pytest.mark.parametrize("method", sorted(PLANNERS))
def test_a_mid_epoch_checkpoint_under_gradient_accumulation_resumes_exactly(tmp_path, method):
    # a step-counted checkpoint lands on a window's end: 5 steps of 2 batches = 10 batches, inside an epoch
    reference, uninterrupted = Record(), PLANNERS[method]()
    trainer_for(uninterrupted, reference, accumulate_grad_batches=2).fit(
        KnownLoss(), datamodule=uninterrupted.wrap(data())
    )
    record, planner = Record(), PLANNERS[method]()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_top_k=1)
    crashing = trainer_for(
        planner, record, checkpoint, CrashAtStep(6), accumulate_grad_batches=2, enable_checkpointing=True
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit(KnownLoss(), datamodule=planner.wrap(data()))
    (path,) = list(tmp_path.iterdir())
    record.rows = record.rows[:10]
    states = torch.load(path, weights_only=False)["callbacks"]
    (state,) = [value for key, value in states.items() if key.startswith(type(planner).__name__)]
    assert record.rows[-1][1] == 5 and state["mid_epoch"]["batches"] > 0  # taken inside an epoch
    resumed = PLANNERS[method]()
    trainer = trainer_for(resumed, record, accumulate_grad_batches=2)
    trainer.fit(KnownLoss(), datamodule=resumed.wrap(data()), ckpt_path=str(path))
    assert record.served() == reference.served() and resumed.served == uninterrupted.served


def test_a_mid_epoch_resume_under_another_batch_size_is_refused(tmp_path):
    planner = PLANNERS["infobatch"]()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=8, save_top_k=-1)
    crashing = trainer_for(planner, checkpoint, CrashAtStep(9), enable_checkpointing=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit(KnownLoss(), datamodule=planner.wrap(data()))
    (path,) = list(tmp_path.iterdir())
    resumed = PLANNERS["infobatch"]()
    with pytest.raises(
        ValueError,
        match=r"resumes epoch 1 after \d+ batches of 16 .*batches of 32.*checkpoint.s batch size and number of devices",
    ):
        trainer_for(resumed).fit(KnownLoss(), datamodule=resumed.wrap(data(batch_size=32)), ckpt_path=str(path))


# ---------------------------------------------------------------------------------------- precision, steps, validation
@pytest.mark.parametrize("method", sorted(PLANNERS))
def test_bf16_mixed_precision_plans_the_same_epochs_as_full_precision(method):
    served = {}
    for precision in ("32-true", "bf16-mixed"):
        planner, record = PLANNERS[method](), Record()
        trainer_for(planner, record, precision=precision).fit(KnownLoss(), datamodule=planner.wrap(data()))
        served[precision] = record.served()
        assert planner.fraction_skipped > 0
    # the table's losses are exact in float32 either way: the plans are identical
    assert served["bf16-mixed"] == served["32-true"]


def test_a_real_model_trains_under_bf16_mixed_with_its_loss_state_in_float32():
    infobatch = PLANNERS["infobatch"]()
    trainer_for(infobatch, precision="bf16-mixed").fit(Regressor(), datamodule=infobatch.wrap(data()))
    assert infobatch.state["loss"].dtype == torch.float32 and infobatch.fraction_skipped > 0


def test_rs2_follows_max_steps_alone():
    rs2, record = lp.RS2(prune_ratio=0.5), Record()
    trainer = trainer_for(rs2, record, epochs=-1, max_steps=10)
    trainer.fit(Regressor(), datamodule=rs2.wrap(data()))
    assert trainer.global_step == 10 and {len(rs2.served)} == {4}  # 48 samples an epoch: 3 batches; 10 steps
    assert record.lr[-1] == pytest.approx(0.0, abs=1e-12)  # the cosine reached its end at max_steps


@pytest.mark.parametrize("method", sorted(PLANNERS))
def test_a_fractional_val_check_interval_validates_inside_every_epoch(method):
    validated: list[tuple[int, int]] = []

    class Validating(Regressor):
        def validation_step(self, batch, batch_idx):
            validated.append((self.current_epoch, self.trainer.fit_loop.epoch_loop.batch_idx))

    planner = PLANNERS[method]()
    datamodule = pl.LightningDataModule.from_datasets(
        train_dataset=lp.IndexedDataset(regression_set()), val_dataset=regression_set(), batch_size=BATCH
    )
    trainer_for(planner, val_check_interval=0.5, num_sanity_val_steps=0).fit(
        Validating(), datamodule=planner.wrap(datamodule)
    )
    checks = sorted({epoch_batch for epoch_batch in validated})
    assert {epoch for epoch, _ in checks} == set(range(EPOCHS))
    assert all(sum(1 for e, _ in checks if e == epoch) == 2 for epoch in range(EPOCHS))  # mid-epoch and at its end


def test_an_integer_val_check_interval_across_epochs_works():
    infobatch = PLANNERS["infobatch"]()
    datamodule = pl.LightningDataModule.from_datasets(
        train_dataset=lp.IndexedDataset(regression_set()), val_dataset=regression_set(), batch_size=BATCH
    )

    class Validating(Regressor):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", F.mse_loss(self.net(batch[0]).squeeze(1), batch[1]))

    trainer = trainer_for(infobatch, val_check_interval=7, check_val_every_n_epoch=None, num_sanity_val_steps=0)
    trainer.fit(Validating(), datamodule=infobatch.wrap(datamodule))
    assert "val_loss" in trainer.callback_metrics and infobatch.fraction_skipped > 0


@pytest.mark.parametrize("method", sorted(PLANNERS))
def test_gradient_accumulation_steps_once_per_window_of_each_epoch(method):
    planner, record = PLANNERS[method](), Record()
    trainer = trainer_for(planner, record, accumulate_grad_batches=2)
    trainer.fit(Regressor(), datamodule=planner.wrap(data()))
    per_epoch = [sum(1 for row in record.rows if row[0] == epoch) for epoch in range(EPOCHS)]
    assert trainer.global_step == sum(math.ceil(b / 2) for b in per_epoch)
    assert record.lr[-1] == pytest.approx(0.0, abs=1e-12) and planner.fraction_skipped > 0


# ---------------------------------------------------------------------------------------- the user's own schedule
def test_a_schedule_of_the_users_own_shape_follows_the_training_progress():
    infobatch, record = PLANNERS["infobatch"](), Record()
    trainer_for(infobatch, record).fit(Regressor("warmup"), datamodule=infobatch.wrap(data()))
    batches = len(record.rows)
    assert min(sum(1 for r in record.rows if r[0] == e) for e in range(EPOCHS)) < N // BATCH  # shorter epochs
    peak = int(np.argmax(record.lr))
    assert 0.1 * batches < peak < 0.3 * batches  # the warm-up ends at 20% of training, not of a step count
    assert record.lr[-1] == pytest.approx(0.0, abs=1e-12)


def test_a_progress_schedule_stepped_per_epoch_is_refused():
    class PerEpoch(Regressor):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
            scheduler = lp.progress_schedule(optimizer, self.trainer, lambda progress: 1.0 - progress)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    infobatch = PLANNERS["infobatch"]()
    with pytest.raises(ValueError, match=r'progress_schedule.*interval="epoch".*"interval": "step"'):
        trainer_for(infobatch).fit(PerEpoch(), datamodule=infobatch.wrap(data()))


def test_a_progress_schedule_needs_a_function_of_the_progress():
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"shape=0.5 must be a function of the fraction of training done"):
        lp.progress_schedule(optimizer, trainer_for(), 0.5)


# ---------------------------------------------------------------------------------------- workers, static selection
@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(PLANNERS))
def test_worker_processes_serve_what_the_main_process_serves(method):
    served = {}
    for workers in (0, 2):
        planner, record = PLANNERS[method](), Record()
        trainer_for(planner, record).fit(
            KnownLoss(), datamodule=planner.wrap(data(num_workers=workers, persistent_workers=workers > 0))
        )
        served[workers] = record.served()
    assert served[2] == served[0]


@pytest.mark.parametrize("method", sorted(PLANNERS))
def test_over_a_static_selection_any_task_prunes_within_it(method):
    selection = lp.Selection(indices=np.arange(0, N, 2), num_samples=N, weights=np.full(N // 2, 2.0))
    planner, record = PLANNERS[method](), Record()
    pruned = lp.PrunedDataModule(data(), selection, weighted=True)
    trainer_for(planner, record).fit(Regressor(), datamodule=planner.wrap(pruned))
    indices = {i for _, _, batch, _ in record.rows for i in batch}
    weights = {w for _, _, _, batch in record.rows for w in batch}
    assert indices <= set(range(0, N, 2)) and planner.fraction_skipped > 0
    assert weights == ({2.0, 4.0} if method == "infobatch" else {2.0})  # the selection's weight times the plan's


def test_resuming_rs2_with_other_settings_is_refused(tmp_path):
    # its state is keyed by its settings, so Lightning would skip it with a warning and the resumed
    # epoch would be planned by other settings (and served again from its start)
    planner = lp.RS2(prune_ratio=0.4, seed=1)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1)
    crashing = trainer_for(planner, checkpoint, CrashAtStep(7), enable_checkpointing=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit(KnownLoss(), datamodule=planner.wrap(data()))
    (path,) = list(tmp_path.iterdir())
    other = lp.RS2(prune_ratio=0.4, seed=2)
    with pytest.raises(
        ValueError,
        match=r"RS2\(\{'prune_ratio': 0.4, 'seed': 2\}\).*written by RS2\(\{'prune_ratio': 0.4, 'seed': 1\}\)",
    ):
        trainer_for(other).fit(KnownLoss(), datamodule=other.wrap(data()), ckpt_path=str(path))


def test_a_hand_built_dynamic_sampler_must_know_the_loaders_batch_size():
    rs2 = lp.RS2(prune_ratio=0.5)

    class HandBuilt(pl.LightningDataModule):
        def train_dataloader(self):
            items = lp.dynamic.WeightedItems(lp.IndexedDataset(regression_set()), carries_weight=False)
            sampler = lp.DynamicSampler(rs2, np.arange(N))  # batch_size left at 1
            return torch.utils.data.DataLoader(items, batch_size=BATCH, sampler=sampler)

    with pytest.raises(ValueError, match=r"batch size is 16 but its DynamicSampler was built with batch_size=1"):
        trainer_for(rs2).fit(Regressor(), datamodule=HandBuilt())


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three 2-process fits (full, stopped, resumed), each starting its own processes
@pytest.mark.parametrize("method", sorted(PLANNERS))
def test_two_ddp_processes_resume_a_mid_epoch_checkpoint_exactly(tmp_path, method):
    # InfoBatch plans the later epochs from every rank's losses of the interrupted one: the checkpoint
    # must hold rank 1's as well as rank 0's (it once held rank 0's only, and the resume was refused)
    tests = os.path.dirname(os.path.abspath(__file__))
    for mode in ("full", "crash", "resume"):
        result = subprocess.run(
            [sys.executable, os.path.join(tests, "ddp_dynamic_resume_worker.py"), str(tmp_path), method, mode],
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([tests, os.path.dirname(tests)]),
            },  # this checkout's package
            capture_output=True,
            text=True,
            timeout=600,
            cwd=os.path.dirname(tests),
        )
        assert result.returncode == 0, result.stderr[-4000:]
    for rank in range(2):
        rows = {
            mode: json.loads((tmp_path / f"{mode}_rank{rank}.json").read_text()) for mode in ("full", "crash", "resume")
        }
        stopped = rows["crash"]
        assert stopped and 0 < len(stopped) < len(rows["full"])
        served = [(e, i, w) for e, _, i, w in stopped + rows["resume"]]
        assert served == [(e, i, w) for e, _, i, w in rows["full"]]


# ---------------------------------------------------------------------------------------- batch layout
class BatchNormRegressor(Regressor):
    """BatchNorm refuses a training batch of one sample ("Expected more than 1 value per channel")."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


@pytest.mark.parametrize(("keep", "replicas"), [(81, 1), (65, 2), (66, 2), (1, 1)])
def test_no_epoch_ends_in_a_one_sample_batch_and_every_planned_sample_is_served(keep, replicas):
    # 81 = 5 x 16 + 1 on one rank; 65 and 66 give each of two ranks 33 = 2 x 16 + 1; 1 is a one-sample plan
    rs2 = lp.RS2(prune_ratio=(N - keep) / N, seed=3)
    planned = rs2.plan(np.arange(N), 0).indices.tolist()
    assert len(planned) == keep
    served: list[int] = []
    for rank in range(replicas):
        sampler = lp.DynamicSampler(rs2, np.arange(N), replicas, rank, batch_size=BATCH, pad_single_sample_batch=True)
        unpadded = lp.DynamicSampler(rs2, np.arange(N), replicas, rank, batch_size=BATCH)
        assert len(unpadded) == len(sampler) - 1  # a model without BatchNorm is served the plan as the official code
        sizes = [len(batch) for batch in torch.utils.data.BatchSampler(sampler, BATCH, drop_last=False)]
        share = math.ceil(keep / replicas)
        assert len(sizes) == math.ceil(share / BATCH)  # as many batches as before: the last one holds two
        assert sizes[-1] == 2 and sum(sizes) == len(sampler)
        served += [index for index, _ in sampler]
    assert set(served) == set(planned)  # nothing left out: the extra entry repeats one of the rank's samples
    assert len(served) == replicas * (math.ceil(keep / replicas) + 1)


def test_a_batchnorm_model_trains_on_plans_that_would_end_in_a_one_sample_batch():
    rs2, record = lp.RS2(prune_ratio=15 / 96, seed=3), Record()  # 81 samples an epoch: 5 batches of 16 and one
    trainer_for(rs2, record, epochs=2).fit(BatchNormRegressor(), datamodule=rs2.wrap(data()))
    assert [len(indices) for _, _, indices, _ in record.rows] == [16] * 5 + [2] + [16] * 5 + [2]
    assert rs2.fraction_skipped == pytest.approx(15 / 96)  # the repeated sample is not counted as a saving lost
