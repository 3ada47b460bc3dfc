"""LitData: a local optimised data set goes score -> select -> train on the selection -> pruned copy."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from collector_harness import CASES, EPOCHS, NUM_SAMPLES, DictBatchModel, KnownLogitsModel, SeenIndices, make_labels

import lightning_prune as lp
from lightning_prune.selection.files import ScoreFileError

litdata = pytest.importorskip("litdata")
from lightning_prune.integrations.litdata import (  # noqa: E402  (after the skip without litdata)
    IndexedStreamingDataset,
    pruned_streaming_dataset,
    source_indices,
    write_pruned_streaming,
)

LABELS = make_labels().numpy()
HERE = os.path.dirname(os.path.abspath(__file__))


def sample(i: int) -> dict:
    # the input is the sample's number, which KnownLogitsModel looks its logits up by
    return {"x": np.array([i], dtype=np.float32), "label": int(LABELS[i])}


def optimise(output_dir: str, count: int = NUM_SAMPLES) -> str:
    litdata.optimize(
        fn=sample, inputs=list(range(count)), output_dir=output_dir, chunk_size=5, num_workers=1, verbose=False
    )
    return output_dir


@pytest.fixture(scope="module")
def optimised(tmp_path_factory) -> str:
    return optimise(str(tmp_path_factory.mktemp("litdata") / "optimised"))


def _fit(model: pl.LightningModule, dataset, epochs: int, callbacks: list[pl.Callback]) -> None:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(dataset, batch_size=4))


@pytest.mark.slow  # litdata.optimize and LitData's dataloader workers start processes
def test_items_carry_their_position_on_disk_through_shuffling_subsets_and_workers(optimised):
    dataset = IndexedStreamingDataset(optimised, shuffle=True, seed=3)
    assert dataset.full_size == NUM_SAMPLES
    streamed = [(int(item["index"]), int(item["x"][0])) for item in dataset]
    assert [index for index, _ in streamed] != list(range(NUM_SAMPLES))  # the shuffle moved the samples
    assert sorted(streamed) == [(i, i) for i in range(NUM_SAMPLES)]
    assert all(dataset[i]["index"] == i == int(dataset[i]["x"][0]) for i in (0, 6, NUM_SAMPLES - 1))

    subset = dataset.subset([2, 3, 11, 30, 36])  # LitData counts a subset's items from 0 again
    assert sorted((int(item["index"]), int(item["x"][0])) for item in subset) == [(i, i) for i in (2, 3, 11, 30, 36)]
    assert [int(subset[i]["index"]) for i in range(len(subset))] == [2, 3, 11, 30, 36]
    assert sorted(int(item["index"]) for item in subset.subset([0, 4])) == [2, 36]

    loader = litdata.StreamingDataLoader(dataset, batch_size=4, num_workers=2)
    batches = list(loader)
    indices = torch.cat([batch["index"] for batch in batches])
    inputs = torch.cat([batch["x"][:, 0] for batch in batches]).long()
    assert sorted(indices.tolist()) == list(range(NUM_SAMPLES)) and torch.equal(indices, inputs)


@pytest.mark.slow  # litdata.optimize and LitData's dataloader workers start processes
@pytest.mark.parametrize("name", ["tdds", "forgetting"])
def test_scores_over_a_streaming_dataset_equal_the_reference(optimised, name):
    case = CASES[name]
    collector = case.make()
    _fit(DictBatchModel(), IndexedStreamingDataset(optimised, shuffle=True), EPOCHS, [collector])
    expected = case.reference(KnownLogitsModel().trajectory())
    np.testing.assert_allclose(collector.scores.values, expected, rtol=case.rtol, atol=case.atol)
    np.testing.assert_array_equal(collector.scores.labels, LABELS)


EVEN_SAMPLES = 32  # 2 ranks x batches of 4 divide it: LitData's drop_last under DDP drops no sample


def _ddp_worker(out_dir, devices: int, data_dir: str, kind: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    worker = os.path.join(HERE, "ddp_litdata_worker.py")
    return subprocess.run(
        [sys.executable, worker, str(out_dir), str(devices), data_dir, kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def optimised_even(tmp_path_factory) -> str:
    return optimise(str(tmp_path_factory.mktemp("litdata_even") / "optimised"), EVEN_SAMPLES)


@pytest.mark.slow  # two DDP processes, and LitData's optimize
def test_two_ddp_processes_score_a_streaming_dataset_built_before_fit_as_one_process_does(optimised_even, tmp_path):
    """LitData alone reads world size 1 on every rank of a data set built before the fit; the scores would hang."""
    result = _ddp_worker(tmp_path, 2, optimised_even, "indexed")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank{rank}.npz")) for rank in (0, 1)]
    per_epoch = EVEN_SAMPLES // 2
    for epoch in range(EPOCHS):  # each epoch, the ranks stream disjoint halves of the data set
        halves = [set(rank["seen"][epoch * per_epoch : (epoch + 1) * per_epoch].tolist()) for rank in ranks]
        assert len(halves[0]) == len(halves[1]) == per_epoch and not halves[0] & halves[1]
        assert halves[0] | halves[1] == set(range(EVEN_SAMPLES))
    trajectory = KnownLogitsModel().trajectory()
    for name in ("tdds", "forgetting"):
        case = CASES[name]
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name])
        expected = case.reference(trajectory)[:EVEN_SAMPLES]
        np.testing.assert_allclose(ranks[0][name], expected, rtol=case.rtol, atol=case.atol)


@pytest.mark.slow  # two DDP processes, and LitData's optimize
@pytest.mark.parametrize(
    ("kind", "samples", "message"),
    [("plain", EVEN_SAMPLES, "built before Trainer.fit"), ("keep_last", NUM_SAMPLES, "different numbers of batches")],
)
def test_a_streaming_split_ddp_would_hang_on_is_refused_on_every_rank(
    optimised, optimised_even, tmp_path, kind, samples, message
):
    """A plain StreamingDataset built before the fit; drop_last=False with shares of 19 and 18 (5 and 4 batches)."""
    result = _ddp_worker(tmp_path, 2, optimised_even if samples == EVEN_SAMPLES else optimised, kind)
    assert result.returncode != 0
    for rank in (0, 1):
        assert message in (tmp_path / f"rank{rank}.error").read_text()


@pytest.mark.slow  # litdata.optimize and LitData's dataloader workers start processes
def test_score_select_train_on_the_subset_and_write_a_pruned_copy(optimised, tmp_path):
    forgetting = CASES["forgetting"].make()
    _fit(DictBatchModel(), IndexedStreamingDataset(optimised, shuffle=True), EPOCHS, [forgetting])
    selection = lp.select(forgetting.scores, prune_ratio=0.5, strategy="random", seed=0)

    served = pruned_streaming_dataset(IndexedStreamingDataset(optimised, shuffle=True), selection)
    assert isinstance(served, IndexedStreamingDataset) and len(served) == len(selection)
    seen = SeenIndices()
    _fit(DictBatchModel(), served, 2, [seen])
    assert sorted(seen.seen) == sorted(2 * selection.indices.tolist())  # each selected sample once per epoch

    # the pruned copy, through the export (write_pruned_streaming) that writes it with its manifest
    copy = lp.export_selection(selection, tmp_path / "pruned", "litdata", dataset=optimised)
    copied = litdata.StreamingDataset(str(copy))
    assert len(copied) == len(selection)
    assert [int(copied[i]["x"][0]) for i in range(len(copied))] == selection.indices.tolist()
    np.testing.assert_array_equal(source_indices(copy), selection.indices)
    assert sorted(os.listdir(tmp_path)) == ["pruned", "pruned.manifest.json"]  # no staging directory left behind
    np.testing.assert_array_equal(lp.load_exported(copy).indices, selection.indices)


@pytest.mark.slow  # litdata.optimize and LitData's dataloader workers start processes
def test_a_selection_of_another_or_a_partial_data_set_is_refused(optimised, tmp_path):
    other = lp.Selection(np.array([0, 1]), num_samples=NUM_SAMPLES + 3)
    with pytest.raises(ScoreFileError, match=f"{NUM_SAMPLES + 3} samples"):
        pruned_streaming_dataset(IndexedStreamingDataset(optimised), other)
    with pytest.raises(ScoreFileError, match=f"{NUM_SAMPLES + 3} samples"):
        write_pruned_streaming(optimised, other, tmp_path / "x")
    selection = lp.Selection(np.array([0, 1]), num_samples=NUM_SAMPLES)
    with pytest.raises(ValueError, match="serves 3 of the 37"):
        pruned_streaming_dataset(IndexedStreamingDataset(optimised).subset([4, 5, 6]), selection)
    with pytest.raises(TypeError, match="StreamingDataset"):
        pruned_streaming_dataset(list(range(NUM_SAMPLES)), selection)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # litdata.optimize and LitData's dataloader workers start processes
def test_items_that_already_have_an_index_field_are_refused(tmp_path):
    litdata.optimize(
        fn=_with_index_field,
        inputs=list(range(4)),
        output_dir=str(tmp_path / "d"),
        chunk_size=4,
        num_workers=1,
        verbose=False,
    )
    with pytest.raises(ValueError, match="already have an 'index' field"):
        IndexedStreamingDataset(str(tmp_path / "d"))[0]


def _with_index_field(i: int) -> dict:
    return {"x": np.zeros(1, dtype=np.float32), "index": i}


def test_importing_the_package_imports_no_integration_and_a_missing_litdata_names_the_extra():
    script = (
        "import sys, lightning_prune as lp\n"
        "print(sorted(m for m in ('datasets', 'litdata') if m in sys.modules))\n"
        "sys.modules['litdata'] = None\n"
        "try:\n"
        "    lp.IndexedStreamingDataset\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    imported, error = out.strip().splitlines()
    assert imported == "[]"
    assert 'pip install "lightning-prune[litdata]"' in error
