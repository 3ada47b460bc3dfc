"""Hugging Face ``datasets``: a ``datasets.Dataset`` goes score -> select -> train on the selection."""

from __future__ import annotations

import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import lightning_prune as lp
from lightning_prune.selection.files import ScoreFileError

datasets = pytest.importorskip("datasets")

N, FEATURES, CLASSES = 48, 6, 3


def _columns() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, N)
    inputs = (rng.normal(size=(N, FEATURES)) + labels[:, None]).astype(np.float32)
    return inputs, labels


def _hf_rows(**extra_columns) -> datasets.Dataset:
    inputs, labels = _columns()
    rows = datasets.Dataset.from_dict({"x": inputs.tolist(), "label": labels.tolist(), **extra_columns})
    return rows.cast_column("x", datasets.Sequence(datasets.Value("float32")))  # the model's dtype, as a user sets it


def _trainer(epochs: int, callbacks: list[pl.Callback]) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def _score(train_set: torch.utils.data.Dataset) -> lp.Scores:
    pl.seed_everything(0, verbose=False)
    model = lp.Classifier(lp.MLP(FEATURES, CLASSES, hidden=8), lr=0.05)
    dm = pl.LightningDataModule.from_datasets(train_dataset=train_set, batch_size=8, num_workers=0)
    el2n = lp.EL2N(epochs=2)
    _trainer(2, [el2n]).fit(model, datamodule=dm)
    return el2n.scores


class SeenIndices(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += batch["index"].tolist()


def test_a_datasets_dataset_scores_as_the_same_tensors_do_then_trains_on_its_selection(tmp_path):
    train_set = lp.HFIndexedDataset(_hf_rows().with_format("torch"))
    inputs, labels = _columns()
    reference = _score(lp.IndexedDataset(TensorDataset(torch.from_numpy(inputs), torch.from_numpy(labels))))
    scores = _score(train_set)
    np.testing.assert_allclose(scores.values, reference.values, rtol=1e-6)
    np.testing.assert_array_equal(scores.labels, labels)

    selection = lp.select(scores, prune_ratio=0.5, strategy="topk")
    pruned = lp.pruned_hf_dataset(train_set, selection)
    assert len(pruned) == len(selection) == N // 2
    np.testing.assert_allclose(np.asarray(pruned["x"]), inputs[selection.indices], rtol=1e-6)

    seen = SeenIndices()
    dm = pl.LightningDataModule.from_datasets(train_dataset=train_set, batch_size=8, num_workers=0)
    _trainer(1, [seen]).fit(
        lp.Classifier(lp.MLP(FEATURES, CLASSES, hidden=8)), datamodule=lp.PrunedDataModule(dm, selection)
    )
    assert sorted(seen.seen) == selection.indices.tolist()


def test_an_index_column_keeps_the_samples_through_a_shuffle():
    rows = _hf_rows(uid=list(range(N))).shuffle(seed=3)
    assert rows["uid"][:5] != list(range(5))  # the shuffle moved the rows
    train_set = lp.HFIndexedDataset(rows.with_format("torch"), index_column="uid")
    _, labels = _columns()
    np.testing.assert_array_equal(train_set.targets, labels)
    for i in (0, 7, N - 1):
        item = train_set[i]
        assert item["index"] == i and int(item["uid"]) == i and int(item["label"]) == labels[i]
    batch = train_set.__getitems__([5, 2, 9])
    assert [item["index"] for item in batch] == [5, 2, 9]
    assert [int(item["uid"]) for item in batch] == [5, 2, 9]

    selection = lp.Selection(
        np.array([3, 10, 40]),
        num_samples=N,
        label_fingerprint=lp.Scores(np.zeros(N), "x", labels=labels).label_fingerprint,
    )
    pruned = lp.pruned_hf_dataset(rows, selection, index_column="uid")
    assert sorted(pruned["uid"][:]) == [3, 10, 40]


def test_row_numbers_without_an_index_column_and_the_source_column():
    rows = _hf_rows()
    train_set = lp.HFIndexedDataset(rows)
    assert train_set[4]["index"] == 4 and train_set[4]["x"] == rows[4]["x"]
    pruned = lp.pruned_hf_dataset(rows, lp.Selection(np.array([9, 1]), num_samples=N), source_column="source_index")
    assert pruned["source_index"][:] == [1, 9] and pruned["x"][:] == [rows[1]["x"], rows[9]["x"]]


def test_a_selection_of_another_data_set_is_refused():
    rows = _hf_rows()
    with pytest.raises(ScoreFileError, match=f"{N + 1} samples"):
        lp.pruned_hf_dataset(rows, lp.Selection(np.array([0]), num_samples=N + 1))
    _, labels = _columns()
    other = lp.Scores(np.zeros(N), "x", labels=np.roll(labels, 1)).label_fingerprint
    with pytest.raises(ScoreFileError, match="other labels"):
        lp.pruned_hf_dataset(rows, lp.Selection(np.array([0]), num_samples=N, label_fingerprint=other))


@pytest.mark.parametrize(
    ("column", "match"),
    [([0] * N, "repeats"), (list(range(1, N + 1)), "outside"), ([float(i) for i in range(N)], "integer")],
)
def test_a_bad_index_column_is_refused(column, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lp.HFIndexedDataset(_hf_rows(uid=column), index_column="uid")


def test_wrong_inputs_are_named():
    rows = _hf_rows(index=list(range(N)))
    with pytest.raises(ValueError, match="index_column='index'"):
        lp.HFIndexedDataset(rows)
    assert lp.HFIndexedDataset(rows, index_column="index")[3]["index"] == 3
    with pytest.raises(ValueError, match="not a column"):
        lp.HFIndexedDataset(_hf_rows(), index_column="uid")
    with pytest.raises(ValueError, match="rename_column"):
        lp.HFIndexedDataset(_hf_rows().rename_column("label", "fine_label"), label_column="fine_label")
    with pytest.raises(TypeError, match="IterableDataset"):
        lp.HFIndexedDataset(_hf_rows().to_iterable_dataset())
    with pytest.raises(TypeError, match=r"dataset\['train'\]"):
        lp.HFIndexedDataset(datasets.DatasetDict({"train": _hf_rows()}))


def test_without_datasets_the_error_names_the_extra():
    script = (
        "import sys; sys.modules['datasets'] = None\n"
        "import lightning_prune as lp\n"
        "try:\n"
        "    lp.HFIndexedDataset([])\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert 'pip install "lightning-prune[hf]"' in out and "HFIndexedDataset" in out


def test_the_hf_export_reloads_to_the_same_indices(tmp_path, capsys):
    rows = _hf_rows(uid=list(range(N))).shuffle(seed=1)
    _, labels = _columns()
    scores = lp.Scores(np.arange(N, dtype=float), "el2n", labels=labels)
    selection = lp.select(scores, prune_ratio=0.75)
    by_uid = lp.export_selection(selection, tmp_path / "by_uid", "hf", dataset=rows, index_column="uid")
    np.testing.assert_array_equal(lp.load_exported(by_uid).indices, selection.indices)
    assert sorted(datasets.load_from_disk(str(by_uid))["uid"][:]) == selection.indices.tolist()

    rows.save_to_disk(str(tmp_path / "rows"))  # the command line reads the data set from disk
    selection = lp.Selection(np.array([0, 5, 7]), num_samples=N)
    selection.save(tmp_path / "sel.npz")
    from lightning_prune.cli import main

    output = str(tmp_path / "by_row")
    main(["export", "--selection", str(tmp_path / "sel.npz"), "--format", "hf", "--dataset", str(tmp_path / "rows"),
          "--output", output])  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    pruned = datasets.load_from_disk(output)
    assert pruned["source_index"][:] == [0, 5, 7] and pruned["uid"][:] == [rows[i]["uid"] for i in (0, 5, 7)]
    np.testing.assert_array_equal(lp.load_exported(output).indices, [0, 5, 7])
