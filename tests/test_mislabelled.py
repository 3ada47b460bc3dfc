"""The likely mislabelled samples: the predicted labels collectors record, ``lp.mislabelled``, its file,
and how well it finds the flipped labels of ``DigitsDataModule(label_noise=0.2)``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from collector_harness import CASES, fit

import lightning_prune as lp
from lightning_prune.selection.mislabelled import DEFAULT_TOP, label_noise_evidence

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDING = {"aum": None, "aum_logits_range": 5, "dual": 5, "el2n": 6, "forgetting": None, "tdds": None}
"""Harness cases whose collectors record predictions, and the last epoch each collects (None: the run's last)."""


@pytest.fixture(scope="module")
def harness_run():
    collectors = {name: CASES[name].make() for name in RECORDING}
    _, model = fit(list(collectors.values()))
    return collectors, model.trajectory()


@pytest.mark.parametrize("name", sorted(RECORDING))
def test_predicted_label_is_the_argmax_of_the_last_collected_epoch(name, harness_run):
    collectors, trajectory = harness_run
    last = RECORDING[name] if RECORDING[name] is not None else trajectory.logits.shape[0] - 1
    expected = trajectory.logits[last].argmax(axis=1)
    predicted = collectors[name].scores.extras["predicted_label"]
    assert predicted.dtype == np.int32
    np.testing.assert_array_equal(predicted, expected)
    assert (predicted != trajectory.labels).any() and (predicted == trajectory.labels).any()


def test_collectors_without_predictions_keep_no_predicted_label(harness_run):
    collector = CASES["dynamic_uncertainty"].make()
    fit([collector])
    assert "predicted_label" not in collector.scores.extras
    with pytest.raises(ValueError, match="do not record the label the training predicts"):
        lp.mislabelled(collector.scores)


@pytest.mark.slow
def test_predicted_labels_on_two_ddp_processes_equal_one_process(tmp_path, harness_run):
    collectors, _ = harness_run
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "ddp_collectors_worker.py"), str(tmp_path), "2", ",".join(RECORDING)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank{rank}.npz")) for rank in (0, 1)]
    for name, collector in collectors.items():
        key = f"{name}:predicted_label"
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])
        np.testing.assert_array_equal(ranks[0][key], collector.scores.extras["predicted_label"])


def _scores(values, labels, predicted, meaning="difficulty"):
    return lp.Scores(
        values=np.asarray(values, dtype=float),
        method="aum",
        labels=np.asarray(labels),
        extras={"predicted_label": np.asarray(predicted)},
        meaning=meaning,
    )


def test_mislabelled_lists_the_hardest_first_with_given_and_predicted_labels():
    scores = _scores([0.1, 0.9, 0.5, 0.9, -0.2], [0, 1, 2, 1, 0], [0, 2, 2, 0, 0])
    suspects = lp.mislabelled(scores, top=3)
    assert suspects.rows() == [
        {"index": 1, "given_label": 1, "predicted_label": 2, "score": 0.9},
        {"index": 3, "given_label": 1, "predicted_label": 0, "score": 0.9},  # ties: by index
        {"index": 2, "given_label": 2, "predicted_label": 2, "score": 0.5},
    ]
    easy = lp.mislabelled(_scores([0.1, 0.9, 0.5, 0.9, -0.2], [0] * 5, [0] * 5, meaning="easiness"), top=0.4)
    np.testing.assert_array_equal(easy.indices, [4, 0])  # the easiest are the least likely mislabelled
    np.testing.assert_allclose(easy.scores, [0.2, -0.1])


@pytest.mark.parametrize(
    ("top", "error", "match"),
    [
        (0, ValueError, r"\[1, 5\]"),
        (6, ValueError, r"\[1, 5\]"),
        (1.5, ValueError, r"\(0, 1\]"),
        (0.0, ValueError, r"\(0, 1\]"),
        (True, TypeError, "count"),
        ("10", TypeError, "count"),
    ],
)
def test_mislabelled_refuses_a_bad_top(top, error, match):
    with pytest.raises(error, match=match):
        lp.mislabelled(_scores(range(5), [0] * 5, [0] * 5), top=top)


def test_mislabelled_refuses_scores_that_cannot_say():
    with pytest.raises(ValueError, match="preference"):
        lp.mislabelled(_scores(range(5), [0] * 5, [0] * 5, meaning="preference"))
    with pytest.raises(ValueError, match="carry no labels"):
        lp.mislabelled(lp.Scores(values=np.arange(5.0), method="aum", extras={"predicted_label": np.zeros(5)}))


def test_mislabelled_file_round_trip_and_refusals(tmp_path):
    suspects = lp.mislabelled(_scores([3.0, 1.0, 2.0], [0, 1, 2], [1, 1, 0]), top=2)
    path = suspects.save(tmp_path / "aum.mislabelled.json")
    document = json.loads(path.read_text())
    assert document["manifest"]["format"] == "lightning-prune/mislabelled"
    assert document["manifest"]["listed"] == 2 and document["manifest"]["num_samples"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    loaded = lp.Mislabelled.load(path)
    assert loaded.rows() == suspects.rows() and loaded.label_fingerprint == suspects.label_fingerprint
    loaded.check_dataset(3, np.array([0, 1, 2]))
    with pytest.raises(lp.ScoreFileError, match="other labels"):
        loaded.check_dataset(3, np.array([2, 1, 0]))
    (tmp_path / "foreign.json").write_text(json.dumps({"samples": []}))
    with pytest.raises(lp.ScoreFileError, match="not a list of likely mislabelled samples"):
        lp.Mislabelled.load(tmp_path / "foreign.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:-20])
    with pytest.raises(lp.ScoreFileError, match="unreadable or truncated"):
        lp.Mislabelled.load(tmp_path / "cut.json")
    with pytest.raises(lp.ScoreFileError, match="no such file"):
        lp.Mislabelled.load(tmp_path / "missing.json")


@pytest.fixture
def one_thread():
    """A 1078-sample CNN trains fastest on one thread; two oversubscribe a loaded 2-core machine (40x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def score_digits(collector: pl.Callback, epochs: int, label_noise: float) -> lp.DigitsDataModule:
    """The study's scoring run (SmallCNN width 16, lr 0.05, batch 64, seed 0) with ``collector``."""
    pl.seed_everything(0, verbose=False)
    data = lp.DigitsDataModule(batch_size=64, label_noise=label_noise)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[collector],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(lp.Classifier(lp.SmallCNN(num_classes=10, width=16), lr=0.05), datamodule=data)
    return data


def test_mislabelled_finds_the_flipped_labels_of_noisy_digits(one_thread):
    """Measured (noise seeds 0 and 1, this set-up): AUM's top 216 (the number of flips) has precision = recall
    = 0.958 on both, its top 10% precision 1.0 (recall 0.5). Floors: 0.9 and 0.95."""
    aum = lp.AUM()
    data = score_digits(aum, epochs=20, label_noise=0.2)
    given = np.asarray(lp.dataset_targets(data.train_dataset))
    flipped = given != data.clean_targets
    num_flipped = int(flipped.sum())
    assert num_flipped == 216

    at_noise_rate = lp.mislabelled(aum.scores, top=num_flipped)
    found = int(flipped[at_noise_rate.indices].sum())
    precision, recall = found / len(at_noise_rate), found / num_flipped
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    np.testing.assert_array_equal(at_noise_rate.given_labels, given[at_noise_rate.indices])
    # where the training disagrees with a listed label, it mostly names the true one (measured: 0.85)
    disagreeing = at_noise_rate.indices[at_noise_rate.predicted_labels != at_noise_rate.given_labels]
    true_named = data.clean_targets[disagreeing] == aum.scores.extras["predicted_label"][disagreeing]
    assert true_named.mean() >= 0.8, true_named.mean()

    default = lp.mislabelled(aum.scores)
    assert len(default) == round(DEFAULT_TOP * len(given))
    assert flipped[default.indices].mean() >= 0.95


@pytest.mark.parametrize(("noise", "low", "high"), [(0.0, 0.0, 0.01), (0.2, 0.15, 0.25)])
def test_dual_scores_read_as_clean_or_noisy_labels_for_auto(one_thread, noise, low, high):
    """auto reads predictions that disagree with under 1% of the labels as clean. Measured (seeds 0-2, the
    study's half-length DUAL run): 0.001-0.003 on the clean digits, 0.198-0.204 with 20% flipped."""
    dual = lp.DUAL(epochs=10, window=5)
    score_digits(dual, epochs=10, label_noise=noise)
    evidence = label_noise_evidence(dual.scores)
    assert evidence is not None and low <= evidence < high, evidence
    assert len(lp.mislabelled(dual.scores, top=10)) == 10


@pytest.mark.slow
def test_the_pipeline_writes_the_list_the_kept_fractions_and_the_picture(tmp_path, capsys):
    from test_cli import TINY, run_cli

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    methods = "[{name: aum}, {name: tdds, args: {trajectory: 3, window: 3}}, {name: entropy}]"
    run_cli("run", config, out, "--methods", methods)
    printed = capsys.readouterr().out
    scores = lp.Scores.load(out / "scores" / "aum.npz")
    listed = lp.Mislabelled.load(out / "scores" / "aum.mislabelled.json")
    assert listed.rows() == lp.mislabelled(scores).rows()  # the default top, from the run's own scores
    assert (out / "scores" / "tdds.mislabelled.json").exists()  # TDDS records predictions too
    assert not (out / "scores" / "entropy.mislabelled.json").exists()  # Entropy records none
    assert "aum.mislabelled.json" in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["kept_per_class"]) == {"aum", "tdds", "entropy", "random"}
    assert len(report["kept_per_class"]["aum"]["0.50"]) == 10
    assert "Kept fraction per class" in printed and "aum at prune 50%: classes kept" in printed
    assert (out / "plots" / "kept_and_removed.png").stat().st_size > 5000
    # a resumed run that lost the list (e.g. one scored before lists were written) writes it again
    (out / "scores" / "aum.mislabelled.json").unlink()
    run_cli("run", config, out, "--methods", methods)
    assert lp.Mislabelled.load(out / "scores" / "aum.mislabelled.json").rows() == listed.rows()
