"""Training budgets: the full-budget baseline forwards what a coreset training forwards and its schedule
ends at zero; rs2 rows skip exactly their ratio; `budget: steps` trains every static coreset for the
full-data training's optimiser steps; `budget: epochs` is unchanged."""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import pytest

import lightning_prune as lp
from lightning_prune.pipeline.budget import StepBudget, steps_per_epoch
from lightning_prune.pipeline.methods import MethodSpec
from lightning_prune.pipeline.runner import PruningRun
from lightning_prune.selection.selection import Selection

BATCH = 64
EPOCHS = 2


def make_data() -> lp.DigitsDataModule:
    return lp.DigitsDataModule(batch_size=BATCH)


def make_model() -> lp.Classifier:
    return lp.Classifier(lp.SmallCNN(num_classes=10, width=4), lr=0.1)


def make_run(tmp_path, **settings) -> PruningRun:
    defaults = {
        "methods": [MethodSpec("el2n", args={"epochs": 1})],
        "prune_ratios": [0.5],
        "seeds": [0],
        "score_epochs": 1,
        "train_epochs": EPOCHS,
        "trainer_args": {"accelerator": "cpu"},
        "log": lambda line: None,
    }
    return PruningRun(tmp_path / "run", make_data, make_model, **{**defaults, **settings})


def cell(run: PruningRun, key: str, ratio: float = 0.5) -> dict:
    return json.loads(run.cell_path(key, ratio, 0).read_text())


@pytest.mark.parametrize(
    ("samples", "world", "batch", "drop_last", "accumulate", "steps"),
    [(755, 1, 64, False, 1, 12), (755, 1, 64, True, 1, 11), (755, 2, 64, False, 1, 6), (755, 1, 64, False, 5, 3)],
)
def test_steps_per_epoch(samples, world, batch, drop_last, accumulate, steps):
    assert steps_per_epoch(samples, world, batch, drop_last, accumulate) == steps


class RecordLearningRate(pl.Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_a_step_budget_fits_the_cosine_to_the_shorter_run():
    data, model, rates = make_data(), make_model(), RecordLearningRate()
    budget = StepBudget(samples_per_epoch=300, epochs=3)
    trainer = pl.Trainer(
        max_epochs=3, callbacks=[budget, rates], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=data)
    data.setup("fit")
    expected = 3 * math.ceil(300 / BATCH)
    assert budget.max_steps == expected == trainer.global_step == len(rates.rates)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # the cosine ended at 0
    assert rates.rates[0] > 0 and all(a >= b for a, b in zip(rates.rates, rates.rates[1:], strict=False))


@pytest.mark.slow
def test_full_budget_and_rs2_rows_forward_what_the_coreset_forwards(tmp_path):
    run = make_run(tmp_path)
    run.run()
    full, coreset, budget, rs2 = (
        cell(run, key, r) for key, r in (("full", 0.0), ("random", 0.5), ("full-budget", 0.5), ("rs2", 0.5))
    )
    num_keep = coreset["num_train"]
    assert coreset["train_samples_forwarded"] == EPOCHS * num_keep
    # the same optimiser steps: full batches of the full data, so at most one batch per epoch apart
    assert budget["max_steps"] == EPOCHS * math.ceil(num_keep / BATCH)
    assert abs(budget["train_samples_forwarded"] - coreset["train_samples_forwarded"]) <= EPOCHS * BATCH
    assert budget["train_samples_forwarded"] < full["train_samples_forwarded"]
    assert rs2["dynamic"] and rs2["train_samples_forwarded"] == EPOCHS * num_keep
    assert rs2["fraction_skipped"] == pytest.approx(1 - num_keep / (full["train_samples_forwarded"] / EPOCHS))
    report = json.loads((run.run_dir / "report.json").read_text())
    assert {"full-budget", "rs2"} <= set(report["test_accuracy"])
    against = report["frontier"]["el2n"]["0.50"]
    assert against["difference"] is not None and "reuse_break_even" in against
    assert set(report["frontier"]) == {"el2n"}  # the baselines make the frontier, they are not judged by it


@pytest.mark.slow
def test_budget_steps_trains_each_static_coreset_for_the_full_runs_steps(tmp_path):
    printed: list[str] = []
    run = make_run(tmp_path, budget="steps", log=printed.append)
    assert run.cells() == [("full", 0.0, 0), ("el2n", 0.5, 0), ("random", 0.5, 0)]  # no equal-cost baselines
    run.run()
    # the protocol is named next to the figures, printed and in report.json
    assert any("protocol budget: steps, equal steps" in line for line in printed)
    report = json.loads((run.run_dir / "report.json").read_text())
    assert report["budget"] == "steps"
    # equal steps save no optimiser step per use: no break-even is claimed from smaller last batches
    assert all("reuse_break_even" not in row for row in report["frontier"].get("el2n", {}).values())
    assert any("equal steps save no compute per use" in line for line in printed)
    full = cell(run, "full", 0.0)
    for key in ("el2n", "random"):
        coreset = cell(run, key)
        # the full run's steps: within one batch per epoch of its samples forwarded
        assert abs(coreset["train_samples_forwarded"] - full["train_samples_forwarded"]) <= EPOCHS * BATCH
        assert coreset["train_epochs"] > EPOCHS


@pytest.mark.slow
def test_budget_epochs_is_unchanged_and_baselines_can_be_turned_off(tmp_path):
    run = make_run(tmp_path, budget_baselines=False)
    assert run.cells() == [("full", 0.0, 0), ("el2n", 0.5, 0), ("random", 0.5, 0)]
    assert "budget" not in run.description  # runs made before the setting keep their identity


def test_a_bad_budget_is_refused(tmp_path):
    with pytest.raises(ValueError, match="budget='time' is not one of"):
        make_run(tmp_path, budget="time")


def test_labels_may_not_take_a_baselines_name(tmp_path):
    with pytest.raises(ValueError, match="full-budget"):
        PruningRun(
            tmp_path / "run",
            make_data,
            make_model,
            methods=[MethodSpec("el2n", label="rs2")],
            prune_ratios=[0.5],
            seeds=[0],
            score_epochs=1,
            train_epochs=1,
        )


@pytest.mark.parametrize(("budget", "epochs_of_full"), [("epochs", False), ("steps", True)])
def test_validated_candidates_train_under_the_runs_protocol(tmp_path, budget, epochs_of_full):
    # a validated selection picks the candidate that trains best under the protocol it is judged by:
    # under equal steps its candidate trainings take the full run's steps, not train_epochs over themselves
    spec = MethodSpec("dual", args={"epochs": 2, "window": 2}, strategy="auto", select_args={"validate": True})
    run = make_run(tmp_path, budget=budget, methods=[spec], score_epochs=2)
    run.score()
    run.select()
    spent = json.loads((run.run_dir / "costs" / "select-dual-r0.50.json").read_text())["samples_forwarded"]
    num_samples, _ = run.training_set_facts()
    candidates = len(Selection.load(run.selection_path("dual", 0.5)).hparams["validated"]["val_acc"])
    per_candidate = spent / candidates
    if epochs_of_full:  # the full run's steps: within one batch per epoch of its samples
        assert abs(per_candidate - EPOCHS * num_samples) <= EPOCHS * BATCH
    else:
        assert per_candidate == EPOCHS * math.ceil(num_samples / 2)


@pytest.mark.parametrize("budget", ["epochs", "steps"])
def test_auto_selects_for_the_runs_budget(tmp_path, budget):
    # from 80% pruned, auto keeps the easiest samples only of a coreset trained for epochs: the run says which
    spec = MethodSpec("el2n", args={"epochs": 2}, strategy="auto", prune_ratios=[0.8])
    run = make_run(tmp_path, budget=budget, methods=[spec], score_epochs=2)
    run.score()
    run.select()
    chosen = Selection.load(run.selection_path("el2n", 0.8)).hparams
    assert chosen["budget"] == budget
    assert chosen["auto_choice"] == ("easy" if budget == "epochs" else "ccs")
