"""Collectors against brute-force references, on 1 and 2 processes, across a crash and resume."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from collector_harness import (
    CASES,
    CRASH_EPOCH,
    EPOCHS,
    fit,
    host_syncs_in_middle_batches,
    make_labels,
    make_loader,
    tdds_reference,
)
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override

import lightning_prune as lp

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def single_process_scores() -> dict[str, np.ndarray]:
    collectors = {name: case.make() for name, case in CASES.items()}
    _, model = fit(list(collectors.values()))
    trajectory = model.trajectory()
    labels = make_labels().numpy()
    results = {}
    for name, collector in collectors.items():
        scores = collector.scores
        np.testing.assert_array_equal(scores.labels, labels)
        results[name] = scores.values
        results[f"{name}:epochs"] = collector.epochs_collected
        results[f"{name}:reference"] = CASES[name].reference(trajectory)
    return results


@pytest.mark.parametrize("name", sorted(CASES))
def test_scores_equal_brute_force_reference(name, single_process_scores):
    case = CASES[name]
    values, reference = single_process_scores[name], single_process_scores[f"{name}:reference"]
    assert values.shape == reference.shape
    assert np.ptp(reference) > 0, "the reference must discriminate samples for the test to mean anything"
    np.testing.assert_allclose(values, reference, rtol=case.rtol, atol=case.atol)


@pytest.fixture(scope="module")
def two_process_scores(tmp_path_factory) -> dict[int, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "ddp_collectors_worker.py"), str(out), "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {rank: dict(np.load(out / f"rank{rank}.npz")) for rank in (0, 1)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ddp_processes_equal_one_process(name, single_process_scores, two_process_scores):
    case = CASES[name]
    rank0, rank1 = two_process_scores[0][name], two_process_scores[1][name]
    np.testing.assert_array_equal(rank0, rank1)  # every rank holds identical scores
    np.testing.assert_allclose(rank0, single_process_scores[name], rtol=case.rtol, atol=case.atol)


class _CrashAfterEpoch(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("with_validation", [False, True], ids=["no-val", "val-checkpoint"])
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, with_validation, single_process_scores):
    crash_epoch = CRASH_EPOCH  # after the checkpoint of epoch 4, inside TDDS's second window
    first = {name: case.make() for name, case in CASES.items()}
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=-1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(
            list(first.values()),
            extra_callbacks=[checkpoint, _CrashAfterEpoch(crash_epoch)],
            default_root_dir=tmp_path,
            with_validation=with_validation,
        )
    assert {n: c.epochs_collected for n, c in first.items()} == {
        n: CASES[n].collected_before_crash(single_process_scores[f"{n}:epochs"]) for n in first
    }

    resumed = {name: case.make() for name, case in CASES.items()}
    fit(
        list(resumed.values()),
        extra_callbacks=[ModelCheckpoint(dirpath=tmp_path / "again")],
        ckpt_path=str(tmp_path / "last.ckpt"),
        default_root_dir=tmp_path,
        with_validation=with_validation,
    )
    for name, collector in resumed.items():
        assert collector.epochs_collected == single_process_scores[f"{name}:epochs"]
        case = CASES[name]  # float32 rounding differs with batch composition, hence the case's tolerance
        np.testing.assert_allclose(collector.scores.values, single_process_scores[name], rtol=case.rtol, atol=case.atol)


def test_float16_buffer_is_close_to_float32():
    half = lp.TDDS(trajectory=EPOCHS, window=4, precision="float16")
    full = lp.TDDS(trajectory=EPOCHS, window=4, precision="float32")
    fit([half, full])
    a, b = half.scores.values, full.scores.values
    np.testing.assert_allclose(a, b, rtol=5e-3, atol=1e-4)
    assert np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1] > 0.99


def test_two_collectors_of_one_class_keep_separate_state(tmp_path):
    short = lp.TDDS(trajectory=4, window=3, precision="float32")
    long = lp.TDDS(trajectory=EPOCHS, window=4, precision="float32")
    assert short.state_key != long.state_key
    _, model = fit([short, long], extra_callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    assert {short.state_key, long.state_key} <= set(saved)
    probs = model.expected_probs()
    # float32 log-probabilities of batch-order-dependent logits: differences of nearly equal logs round at ~1e-7
    np.testing.assert_allclose(short.scores.values, tdds_reference(probs, 4, 3, 0.9), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(long.scores.values, tdds_reference(probs, EPOCHS, 4, 0.9), rtol=1e-5, atol=1e-6)


def test_validate_and_test_after_fit_leave_scores_intact():
    tdds = lp.TDDS(trajectory=EPOCHS, window=4, precision="float32")
    trainer, model = fit([tdds])
    before = tdds.scores.values.copy()
    trainer.validate(model, dataloaders=make_loader(shuffle=False), verbose=False)
    np.testing.assert_array_equal(tdds.scores.values, before)


def test_second_fit_warns_and_starts_over():
    forgetting = lp.Forgetting()
    fit([forgetting], epochs=3)
    assert forgetting.epochs_collected == 3
    with pytest.warns(UserWarning, match="earlier fit"):
        fit([forgetting], epochs=2)
    assert forgetting.epochs_collected == 2


def test_epochs_after_the_trajectory_are_not_collected():
    tdds = lp.TDDS(trajectory=4, window=3, precision="float32")
    _, model = fit([tdds], epochs=EPOCHS)
    assert tdds.epochs_collected == 4
    reference = tdds_reference(model.expected_probs(), 4, 3, 0.9)
    np.testing.assert_allclose(tdds.scores.values, reference, rtol=1e-5, atol=1e-6)  # float32 rounding, as above


def test_save_path_writes_score_file_at_fit_end(tmp_path):
    target = tmp_path / "scores" / "forgetting.npz"
    forgetting = lp.Forgetting(save_path=str(target))
    fit([forgetting], epochs=3)
    loaded = lp.Scores.load(target)
    np.testing.assert_array_equal(loaded.values, forgetting.scores.values)
    assert loaded.method == "forgetting"


class _SyncingForgetting(lp.Forgetting):
    @override
    def batch_values(self, view):
        if view.logits.max() > 1e9:  # `if tensor` waits for the device
            raise AssertionError
        return super().batch_values(view)


@pytest.mark.parametrize("name", [*sorted(CASES), "syncing-control"])
def test_no_host_synchronisation_in_the_batch_hook(name, monkeypatch):
    """Between the first and last batch of an epoch the hook must not wait for the device.

    On a GPU each of these calls blocks the host until the kernels queued so far finish, which
    stalls the training pipeline; on the CPU they are harmless, so spy on them instead. The
    control collector synchronises on purpose and must be caught.
    """
    collector = _SyncingForgetting() if name == "syncing-control" else CASES[name].make()
    calls = host_syncs_in_middle_batches(monkeypatch, collector)
    fit([collector])
    if name == "syncing-control":
        assert "__bool__" in calls
    else:
        assert calls == []


def test_dual_stores_the_mean_label_probability_of_its_epochs():
    collector = lp.DUAL(epochs=6, window=3)
    _, model = fit([collector])
    t = model.trajectory()
    expected = t.probs[:6, np.arange(t.probs.shape[1]), t.labels].mean(axis=0)
    np.testing.assert_allclose(collector.scores.extras["confidence"], expected, atol=1e-6)


@pytest.mark.parametrize(
    ("epochs", "window", "match"), [(1, 1, "epochs must be an integer >= 2"), (4, 6, "cannot exceed")]
)
def test_dual_refuses_impossible_windows(epochs, window, match):
    with pytest.raises(ValueError, match=match):
        lp.DUAL(epochs=epochs, window=window)
