"""Every file in examples/ starts as shipped: run configs on tiny data in the real on-disk format,
the LightningCLI config and the Python scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
from fake_cifar import write_cifar10, write_cifar100

import lightning_prune as lp
from lightning_prune.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
RUN_CONFIGS = sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.yaml") if p.name != "fit.yaml")


class Started(Exception):
    """Raised once the scoring run has trained on its first batches with every collector attached."""


class StopAfterFirstBatches(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= 1 or trainer.num_training_batches <= 1:
            raise Started()


def test_every_example_is_covered():
    shipped = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".py")}
    scripts = {"prune_digits.py", "influence_theory_check.py", "regression_dynamic.py", "study/summarise.py"}
    scripts |= {"study/proxy.py"}
    assert shipped == {*RUN_CONFIGS, "fit.yaml", *scripts}, "a new example needs a start test here"


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_config_starts_as_shipped(name, tmp_path, monkeypatch):
    """The scoring run of each config builds its data, model and every collector and trains its first batches."""
    text = (EXAMPLES / name).read_text()
    if "CIFAR10DataModule" in text:
        write_cifar10(tmp_path / "data", monkeypatch, per_batch=60)
    elif "CIFAR100DataModule" in text:
        write_cifar100(tmp_path / "data", monkeypatch, num_train=300)
    config = tmp_path / Path(name).name
    config.write_text(text.replace("root: ./data", f"root: {tmp_path / 'data'}"))
    import lightning_prune.pipeline.runner as runner

    original = runner.PruningRun.make_trainer
    monkeypatch.setattr(
        runner.PruningRun,
        "make_trainer",
        lambda self, epochs, callbacks=None, **kw: original(
            self, epochs, [*(callbacks or []), StopAfterFirstBatches()], **kw
        ),
    )
    with pytest.raises(Started):
        main(["run", "--debug", "--config", str(config), "--output_dir", str(tmp_path / "run")])


@pytest.mark.slow
def test_fit_config_writes_scores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(EXAMPLES / "fit.yaml"), "--trainer.enable_progress_bar", "false"])
    tdds = lp.Scores.load(tmp_path / "prune_runs" / "fit" / "tdds.npz")
    assert tdds.method == "tdds" and tdds.num_samples == len(lp.DigitsDataModule().train_dataset)
    assert lp.Scores.load(tmp_path / "prune_runs" / "fit" / "forgetting.npz").method == "forgetting"


def _run_script(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_prune_digits_script_runs(tmp_path):
    printed = _run_script([str(EXAMPLES / "prune_digits.py")], tmp_path)
    for line in (
        "full data (1348 samples): test accuracy",
        "TDDS top-50% (674 samples): test accuracy",
        "random 50% (674 samples): test accuracy",
        "TDDS and forgetting keep",
    ):
        assert line in printed, printed


@pytest.mark.slow
def test_regression_dynamic_script_runs(tmp_path):
    printed = _run_script([str(EXAMPLES / "regression_dynamic.py"), "--epochs", "6", "--samples", "800"], tmp_path)
    assert "full data: test MSE" in printed, printed
    skipped = float(printed.split("InfoBatch(prune_ratio=0.5): test MSE ")[1].split("% of sample")[0].split(", ")[1])
    assert 0 < skipped < 50, printed


@pytest.mark.slow
def test_influence_theory_check_runs(tmp_path):
    printed = _run_script([str(EXAMPLES / "influence_theory_check.py"), "--sets-per-size", "1"], tmp_path)
    assert "influence vectors: S" in printed and "pearson" in printed.lower(), printed


def _study_report(path: Path, gains: dict[str, float], seeds: int = 3) -> None:
    ratios = ["0.30", "0.50", "0.70", "0.80", "0.90"]
    spread = 0.01 if seeds > 1 else 0.0

    def entry(mean: float) -> dict:
        return {"mean": mean, "std": spread, "runs": [mean + spread * (i - 1) for i in range(seeds)]}

    accuracy = {
        "full": {"0.00": entry(0.95)},
        "recommended": {r: entry(0.8 + gains.get(r, 0.0)) for r in ratios},
        "random": {r: entry(0.8) for r in ratios},
    }
    costs = {"recommended": {r: {"relative": 1.5} for r in ratios}}
    validated = {"recommended": {"0.30": {"chosen": "random"}, "0.90": {"chosen": "easy"}}}
    path.mkdir()
    (path / "report.json").write_text(
        json.dumps(
            {
                "prune_ratios": [float(r) for r in ratios],
                "test_accuracy": accuracy,
                "total_cost": costs,
                "validated": validated,
            }
        )
    )


def test_study_summary_tabulates_checks_and_plots(tmp_path):
    _study_report(tmp_path / "a", {"0.70": 0.03, "0.90": 0.05})
    _study_report(tmp_path / "b", {"0.30": -0.01})
    _study_report(tmp_path / "c", {"0.70": 0.02, "0.90": 0.021})
    plot = tmp_path / "study.png"
    out = _run_script(
        [str(EXAMPLES / "study" / "summarise.py"), *(str(tmp_path / n) for n in "abc"), "--plot", str(plot)], tmp_path
    )
    assert "| recommended | 80.00 ± 1.00 (1.50x)" in out
    assert "recommended: validation chose 30% random, 90% easy" in out
    assert "BEHIND random at 30% (-1.00)" in out
    assert ">= 2 points ahead of random at both 70% and 90%: 2 of 3 data sets" in out
    assert plot.stat().st_size > 0


def test_study_summary_prints_a_single_seed_alone(tmp_path):
    for name in "abc":
        _study_report(tmp_path / name, {}, seeds=1)
    out = _run_script(
        [
            str(EXAMPLES / "study" / "summarise.py"),
            *(str(tmp_path / n) for n in "abc"),
            "--plot",
            str(tmp_path / "p.png"),
        ],
        tmp_path,
    )
    assert "| recommended | 80.00 (1.50x)" in out and "±" not in out.split("### ")[1]


def test_proxy_study_tabulates_accuracy_cost_and_the_rank_correlation_of_the_two_scorings(tmp_path):
    values = np.arange(10.0)
    for key, accuracy, cost, order in (("self", 0.90, 1.5, values), ("proxy", 0.88, 0.57, values[::-1])):
        run_dir = tmp_path / f"digits-{key}"
        (run_dir / "scores").mkdir(parents=True)
        cell = {"0.50": {"mean": accuracy, "std": 0.01, "runs": [accuracy] * 3}}
        frontier = {"0.50": {"difference": -0.5 if key == "self" else 1.25}}
        report = {
            "test_accuracy": {"tdds": cell, "aum": cell, "random": {"0.50": {"mean": 0.85, "std": 0.0}}},
            "total_cost": {"tdds": {"0.50": {"relative": cost}}, "aum": {"0.50": {"relative": cost}}},
            "frontier": {"tdds": frontier, "aum": frontier},
        }
        (run_dir / "report.json").write_text(json.dumps(report))
        lp.Scores(order, "tdds").save(run_dir / "scores" / "tdds.npz")
        lp.Scores(values if key == "self" else values + 1, "aum").save(run_dir / "scores" / "aum.npz")
    out = _run_script(
        [str(EXAMPLES / "study" / "proxy.py"), "--output_dir", str(tmp_path), "--data_sets", "digits", "--tabulate"],
        tmp_path,
    )
    assert (
        "| digits | tdds | 90.00 ± 1.00 (1.50x) | 88.00 ± 1.00 (0.57x) | +2.00 | -1.00 | 85.00 | -0.50 / +1.25 |" in out
    )
    assert (
        "| digits | aum | 90.00 ± 1.00 (1.50x) | 88.00 ± 1.00 (0.57x) | +2.00 | 1.00 | 85.00 | -0.50 / +1.25 |" in out
    )
