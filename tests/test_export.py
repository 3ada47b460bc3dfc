"""Exporting a selection for other pipelines: every format re-loads to the same indices, with its manifest."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import lightning_prune as lp
from lightning_prune.cli import main
from lightning_prune.integrations.export import EXPORT_FORMATS, manifest_path
from lightning_prune.selection.files import ScoreFileError

N = 30
LABELS = np.arange(N) % 3


def _scores() -> lp.Scores:
    return lp.Scores(np.random.default_rng(0).normal(size=N), "el2n", labels=LABELS)


def _selection(weighted: bool = False) -> lp.Selection:
    return lp.select(_scores(), prune_ratio=0.6, strategy="topk", weights="importance" if weighted else None)


@pytest.mark.parametrize("name", ["npy", "csv", "parquet"])
@pytest.mark.parametrize("weighted", [False, True])
def test_file_exports_reload_to_the_same_selection(tmp_path, name, weighted):
    if name == "parquet":
        pytest.importorskip("pyarrow")
    selection = _selection(weighted)
    output = lp.export_selection(selection, tmp_path / f"kept.{name}", name, scores=_scores())
    again = lp.load_exported(output)
    np.testing.assert_array_equal(again.indices, selection.indices)
    assert again.num_samples == N and again.method == selection.method
    assert again.label_fingerprint == selection.label_fingerprint
    if weighted and name != "npy":
        np.testing.assert_array_equal(again.weights, selection.weights)
    else:
        assert again.weights is None
    manifest = json.loads(manifest_path(output).read_text())
    assert manifest["format"] == "lightning-prune/export" and manifest["export_format"] == name
    assert manifest["num_kept"] == len(selection) and manifest["num_samples"] == N
    assert manifest["hparams"] == selection.hparams


def test_npy_is_the_sorted_kept_ids(tmp_path):
    selection = _selection()
    ids = np.load(lp.export_selection(selection, tmp_path / "kept.npy"))
    assert ids.dtype == np.int64 and ids.tolist() == sorted(selection.indices.tolist())


def test_csv_has_one_row_per_sample_with_id_kept_weight_score(tmp_path):
    scores, selection = _scores(), _selection(weighted=True)
    with open(lp.export_selection(selection, tmp_path / "kept.csv", "csv", scores=scores), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["id"]) for row in rows] == list(range(N))
    kept = {int(row["id"]) for row in rows if row["kept"] == "1"}
    assert kept == set(selection.indices.tolist())
    np.testing.assert_array_equal([float(row["score"]) for row in rows], scores.values)  # exact: repr round-trips
    weight = dict(zip(selection.indices.tolist(), selection.weights.tolist(), strict=True))
    assert all(float(row["weight"]) == weight.get(int(row["id"]), 0.0) for row in rows)
    manifest = json.loads(manifest_path(tmp_path / "kept.csv").read_text())
    assert manifest["score_method"] == "el2n" and manifest["score_meaning"] == scores.meaning.value


def test_without_scores_the_score_column_is_empty(tmp_path):
    pa = pytest.importorskip("pyarrow.parquet")
    lp.export_selection(_selection(), tmp_path / "kept.csv", "csv")
    with open(tmp_path / "kept.csv", newline="") as handle:
        assert {row["score"] for row in csv.DictReader(handle)} == {""}
    lp.export_selection(_selection(), tmp_path / "kept.parquet", "parquet")
    table = pa.read_table(tmp_path / "kept.parquet")
    assert table.column_names == ["id", "kept", "weight", "score"] and table.column("score").null_count == N
    assert json.loads(manifest_path(tmp_path / "kept.csv").read_text())["score_method"] is None


def test_an_edited_or_unmanifested_export_is_refused(tmp_path):
    output = lp.export_selection(_selection(), tmp_path / "kept.csv", "csv")
    output.write_text(output.read_text() + f"{N},1,1.0,\n")
    with pytest.raises(ScoreFileError, match="sha256"):
        lp.load_exported(output)
    np.save(tmp_path / "other.npy", np.arange(3))
    with pytest.raises(ScoreFileError, match="manifest"):
        lp.load_exported(tmp_path / "other.npy")


def test_wrong_inputs_are_named(tmp_path):
    selection = _selection()
    with pytest.raises(ValueError, match="choose one of npy, csv, parquet, hf, litdata"):
        lp.export_selection(selection, tmp_path / "x", "tsv")
    with pytest.raises(ValueError, match="pass dataset="):
        lp.export_selection(selection, tmp_path / "x", "hf")
    with pytest.raises(ScoreFileError, match=f"{N + 1}"):
        lp.export_selection(selection, tmp_path / "x.csv", "csv", scores=lp.Scores(np.zeros(N + 1), "el2n"))
    other = lp.Scores(np.zeros(N), "el2n", labels=np.roll(LABELS, 1))
    with pytest.raises(ScoreFileError, match="other labels"):
        lp.export_selection(selection, tmp_path / "x.csv", "csv", scores=other)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        lp.export_selection(selection, tmp_path, "npy")


def test_every_registered_format_is_documented_and_listed_in_the_cli_help(capsys):
    from lightning_prune.cli import build_export_parser

    help_text = " ".join(build_export_parser().format_help().split())
    for name, export_format in EXPORT_FORMATS.items():
        assert f"{name}: {export_format.description}" in help_text
        assert f"``{name}``" in (lp.integrations.export.__doc__ or "")


def test_the_export_command_writes_what_the_python_call_writes(tmp_path, capsys):
    selection, scores = _selection(weighted=True), _scores()
    selection.save(tmp_path / "sel.npz")
    scores.save(tmp_path / "scores.npz")
    argv = ["export", "--selection", str(tmp_path / "sel.npz"), "--scores", str(tmp_path / "scores.npz")]
    main([*argv, "--format", "csv", "--output", str(tmp_path / "cli.csv")])
    assert "wrote" in capsys.readouterr().out
    lp.export_selection(selection, tmp_path / "py.csv", "csv", scores=scores)
    assert (tmp_path / "cli.csv").read_text() == (tmp_path / "py.csv").read_text()
    np.testing.assert_array_equal(lp.load_exported(tmp_path / "cli.csv").weights, selection.weights)


def test_the_export_command_names_a_bad_format_in_one_line(tmp_path, capsys):
    _selection().save(tmp_path / "sel.npz")
    with pytest.raises(SystemExit) as stop:
        main(["export", "--selection", str(tmp_path / "sel.npz"), "--format", "tsv", "--output", str(tmp_path / "x")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "unknown export format 'tsv'" in err.lower() and "Traceback" not in err


def test_parquet_without_pyarrow_names_the_extra(tmp_path):
    _selection().save(tmp_path / "sel.npz")
    script = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
        "from lightning_prune.cli import main\n"
        f"main(['export', '--selection', {str(tmp_path / 'sel.npz')!r}, '--format', 'parquet', "
        f"'--output', {str(tmp_path / 'x.parquet')!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert 'pip install "lightning-prune[hf]"' in done.stderr and "Parquet" in done.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_the_integrations_are_extras_that_the_test_extra_installs():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras, core = project["optional-dependencies"], " ".join(project["dependencies"])
    assert "datasets" not in core and "litdata" not in core and "pyarrow" not in core
    assert [d.split(">")[0] for d in extras["hf"]] == ["datasets"]
    assert [d.split(">")[0] for d in extras["litdata"]] == ["litdata"]
    assert extras["all"] == ["lightning-prune[influence,plots,hf,litdata]"] and "lightning-prune[all]" in extras["test"]


def test_a_directory_output_is_replaced_only_once_the_new_one_is_complete(tmp_path):
    from lightning_prune.selection.files import write_directory_atomic

    def write(text):
        def into(directory):
            directory.mkdir()
            (directory / "part").write_text(text)

        return into

    target = write_directory_atomic(tmp_path / "out", write("old"))

    def fail(directory):
        write("half")(directory)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_directory_atomic(target, fail)
    assert (target / "part").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    write_directory_atomic(target, write("new"))
    assert (target / "part").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        write_directory_atomic(tmp_path / "file", write("y"))
