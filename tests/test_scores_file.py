"""The score-file format: round trip, atomic writes, and clear refusals."""

from __future__ import annotations

import os

import numpy as np
import pytest

import lightning_prune as lp


def _scores(n: int = 20) -> lp.Scores:
    rng = np.random.default_rng(0)
    return lp.Scores(
        values=rng.normal(size=n),
        method="tdds",
        hparams={"trajectory": 30, "window": (10,)},
        labels=rng.integers(0, 3, n),
        extras={"margin": rng.normal(size=n)},
    )


def test_round_trip_keeps_values_labels_extras_and_manifest(tmp_path):
    scores = _scores()
    path = scores.save(tmp_path / "nested" / "tdds")
    assert path.name == "tdds.npz"
    assert os.listdir(path.parent) == ["tdds.npz"]  # no temporary file left behind
    loaded = lp.Scores.load(path)
    np.testing.assert_array_equal(loaded.values, scores.values)
    np.testing.assert_array_equal(loaded.labels, scores.labels)
    np.testing.assert_array_equal(loaded.extras["margin"], scores.extras["margin"])
    assert loaded.method == "tdds" and loaded.hparams == {"trajectory": 30, "window": [10]}
    assert loaded.label_fingerprint == scores.label_fingerprint


def test_truncated_file_is_refused(tmp_path):
    path = _scores().save(tmp_path / "s.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(lp.ScoreFileError, match="truncated"):
        lp.Scores.load(path)


def test_foreign_and_missing_files_are_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", values=np.zeros(3))
    with pytest.raises(lp.ScoreFileError, match="no manifest"):
        lp.Scores.load(tmp_path / "plain.npz")
    lp.Selection(indices=[0, 2], num_samples=4).save(tmp_path / "sel.npz")
    with pytest.raises(lp.ScoreFileError, match="not a 'lightning-prune/scores' file"):
        lp.Scores.load(tmp_path / "sel.npz")
    with pytest.raises(lp.ScoreFileError, match="no such file"):
        lp.Scores.load(tmp_path / "missing.npz")


def test_scores_for_another_data_set_are_refused():
    scores = _scores(20)
    with pytest.raises(lp.ScoreFileError, match="20 samples.*has 21"):
        scores.check_dataset(21)
    other_labels = scores.labels.copy()
    other_labels[[0, 1]] = other_labels[[1, 0]] + 5
    with pytest.raises(lp.ScoreFileError, match="other labels"):
        scores.check_dataset(20, other_labels)
    scores.check_dataset(20, scores.labels)


def test_non_finite_scores_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        lp.Scores(values=np.array([1.0, np.nan]), method="x")


def test_selection_round_trip_with_weights(tmp_path):
    selection = lp.Selection(indices=[5, 1, 3], num_samples=8, weights=[0.5, 0.1, 0.3], method="tdds")
    np.testing.assert_array_equal(selection.indices, [1, 3, 5])
    np.testing.assert_allclose(selection.weights, [0.1, 0.3, 0.5])  # weights follow their indices
    loaded = lp.Selection.load(selection.save(tmp_path / "sel.npz"))
    np.testing.assert_array_equal(loaded.indices, [1, 3, 5])
    np.testing.assert_allclose(loaded.weights, [0.1, 0.3, 0.5])
    assert loaded.prune_ratio == pytest.approx(5 / 8)
    with pytest.raises(ValueError, match="unique"):
        lp.Selection(indices=[1, 1], num_samples=3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        lp.Selection(indices=[3], num_samples=3)


@pytest.mark.parametrize("labels", [[0.5, 1.7], [0.0, np.nan]])
def test_non_integer_labels_are_refused_not_truncated(labels):
    with pytest.raises(ValueError, match="labels must be whole class numbers"):
        lp.Scores(values=np.array([1.0, 2.0]), method="x", labels=labels)


def test_integral_float_labels_are_accepted():
    assert lp.Scores(values=np.array([1.0, 2.0]), method="x", labels=[0.0, 3.0]).labels.tolist() == [0, 3]


@pytest.mark.parametrize("kind", ["Scores", "Selection"])
def test_loading_a_plain_numpy_file_names_the_file_and_the_format(tmp_path, kind):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(4.0))
    with pytest.raises(lp.ScoreFileError, match=r"x\.npy: not a lightning-prune .* file.*\.npz.*np\.load"):
        getattr(lp, kind).load(path)


def test_saved_files_honour_the_umask(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        path = _scores(5).save(tmp_path / "s.npz")
    finally:
        os.umask(previous)
    assert (os.stat(path).st_mode & 0o777) == 0o644


def test_label_fingerprint_refuses_fractional_labels_instead_of_truncating():
    with pytest.raises(ValueError, match="whole class numbers"):
        lp.random_selection(2, 0.5, labels=np.array([0.5, 1.7]))
