"""The README's quick start is what CI runs, its links and commands exist, and the routes it documents work."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import lightning_prune as lp

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_has_exactly_two_commands():
    assert len(_quick_start_commands()) == 2


def test_ci_runs_the_readme_test_command_verbatim():
    test_line = _quick_start_commands()[1]
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert test_line in ci_lines


def test_torchvision_ops_load():
    import torch
    import torchvision.ops

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_ci_runs_the_static_checks():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert {"ruff check .", "ruff format --check .", "mypy"} <= set(ci_lines)


DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
QUIET = dict(
    accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
)


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # comments in code blocks are not headings
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.*)$", text, re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [m.group(1) for m in re.finditer(r"\]\(([^)\s]+)\)", text) if not m.group(1).startswith("http")]


def test_the_readme_links_every_docs_page() -> None:
    assert len(DOCS) >= 5
    linked = {(ROOT / link.split("#")[0]).resolve() for link in _links(ROOT / "README.md")}
    assert [page.name for page in DOCS if page.resolve() not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    for link in _links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: link {link!r} points at a missing file"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name}: link {link!r}: no such heading in {path.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_scripts_and_configs_the_pages_name_exist(page: Path) -> None:
    # Each measured figure is kept reproducible by the command next to it: the files it names must exist.
    named = set(re.findall(r"\b((?:examples|benchmarks)/[\w/.-]+\.(?:py|yaml))", page.read_text()))
    assert [name for name in sorted(named) if not (ROOT / name).exists()] == []


def test_the_studies_page_names_the_machine_and_torch_it_was_measured_on() -> None:
    text = (ROOT / "docs" / "studies.md").read_text()
    assert re.search(r"torch 2\.\d+\.\d+", text) and "lscpu" in text and "seed" in text


# The routes the README and docs/guide.md document, run as written on tiny data.


class _DictModel(L.LightningModule):
    """The dict-batch model of docs/guide.md: reads inputs and labels by key."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        logits = self(batch["image"])
        return {"loss": F.cross_entropy(logits, batch["label"]), "logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_dict_rows_train_with_a_collector_and_the_pruned_indices_are_the_masks_complement() -> None:
    # The shape of a Hugging Face datasets.Dataset row for image classification: {"image": ..., "label": ...}.
    generator = torch.Generator().manual_seed(0)
    rows = [{"image": torch.randn(1, 8, 8, generator=generator), "label": k % 10} for k in range(60)]
    train_set = lp.IndexedDataset(rows)
    batch = next(iter(DataLoader(train_set, batch_size=16)))
    assert set(batch) == {"image", "label", "index"} and batch["index"].tolist() == list(range(16))
    forgetting = lp.Forgetting()
    L.Trainer(max_epochs=2, callbacks=[forgetting], **QUIET).fit(
        _DictModel(), DataLoader(train_set, batch_size=16, shuffle=True)
    )
    np.testing.assert_array_equal(forgetting.scores.labels, np.arange(60) % 10)
    selection = lp.select(forgetting.scores, prune_ratio=0.7)
    pruned = np.flatnonzero(~selection.mask())
    assert len(pruned) == 42 and not set(pruned) & set(selection.indices.tolist())
    assert len(pruned) + len(selection) == selection.num_samples == 60


def test_bf16_mixed_precision_fit_with_a_collector_on_cpu() -> None:
    dm = lp.DigitsDataModule(batch_size=256)
    tdds, el2n = lp.TDDS(trajectory=3, window=3), lp.EL2N(epochs=2)
    L.Trainer(max_epochs=3, precision="bf16-mixed", callbacks=[tdds, el2n], **QUIET).fit(
        lp.Classifier(lp.SmallCNN(width=8)), datamodule=dm
    )
    for scores in (tdds.scores, el2n.scores):
        assert len(scores) == len(dm.train_dataset) and np.isfinite(scores.values).all()
        assert np.unique(scores.values).size > 10  # real per-sample values, not a constant


def _guide_yaml() -> str:
    guide = (ROOT / "docs" / "guide.md").read_text()
    section = guide.split("## `PrunedDataModule` in a LightningCLI YAML", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def test_the_guides_pruned_datamodule_yaml_trains_on_the_selection(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.cli import LightningCLI

    from lightning_prune.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-prune"])  # LightningCLI warns when given args and argv both
    yaml = _guide_yaml()
    path = re.search(r"selection: (\S+)", yaml).group(1)
    num_samples = len(lp.DigitsDataModule().train_dataset)
    selection = lp.random_selection(num_samples, 0.5, seed=0)
    (tmp_path / path).parent.mkdir(parents=True)
    selection.save(tmp_path / path)
    (tmp_path / "fit_pruned.yaml").write_text(yaml)
    overrides = [
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    main(["fit", "--config", "fit_pruned.yaml", *overrides])  # the documented command, as written
    cli = LightningCLI(
        model_class=L.LightningModule,
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=["--config", "fit_pruned.yaml"],
        run=False,
    )
    assert isinstance(cli.datamodule, lp.PrunedDataModule)
    served = [i for batch in cli.datamodule.train_dataloader() for i in batch[2].tolist()]
    assert sorted(served) == selection.indices.tolist()
