"""The collector contract: identity derived from the constructor, public checked hooks, the merges
the README offers, and the defects found by trying collectors with bad input."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from collector_harness import (
    CASES,
    EPOCHS,
    NUM_SAMPLES,
    EveryMerge,
    KnownLogitsModel,
    every_merge_parts,
    fit,
    make_loader,
)
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

import lightning_prune as lp
from lightning_prune.collectors import COLLECTORS, ScoreCollector
from lightning_prune.collectors.base import NON_IDENTIFYING, check_unique_state_keys
from lightning_prune.collectors.features import FeatureCollector

HERE = os.path.dirname(os.path.abspath(__file__))


def _library_collector_classes() -> list[type]:
    found, stack = [], [ScoreCollector]
    while stack:
        cls = stack.pop()
        if cls.__module__.startswith("lightning_prune.collectors."):
            found.append(cls)
        stack.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda cls: cls.__qualname__)


# ---------------------------------------------------------------------------------------------- identity


def test_dual_identity_tells_training_pass_from_eval_pass():
    train, eval_pass = lp.DUAL(epochs=6, window=3), lp.DUAL(epochs=6, window=3, source="eval_pass")
    assert train.hparams() != eval_pass.hparams()
    assert train.state_key != eval_pass.state_key
    assert train.hparams()["source"] == "train" and eval_pass.hparams()["source"] == "eval_pass"


def _user_arguments(cls: type) -> set[str]:
    """What a user can pass to ``cls(...)`` (through every ``**kwargs``), minus the documented non-identifying."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or not issubclass(klass, ScoreCollector):
            continue
        parameters = list(inspect.signature(init).parameters.values())[1:]
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    excluded = NON_IDENTIFYING | cls.non_identifying | (set() if cls.needs_features else {"feature_layer"})
    return names - excluded


@pytest.mark.parametrize("method", sorted(COLLECTORS))
def test_every_registered_collector_records_every_identifying_argument(method):
    cls = COLLECTORS[method]
    collector = cls()
    hparams = collector.hparams()
    assert set(hparams) == _user_arguments(cls)
    assert json.loads(json.dumps(hparams)) == hparams  # plain JSON: it goes into manifests


@pytest.mark.parametrize("method", sorted(COLLECTORS))
def test_a_changed_argument_changes_the_identity(method):
    """For every identifying argument, some other accepted value gives another state key."""
    cls = COLLECTORS[method]
    alternatives = {
        "trajectory": 12,
        "window": 4,
        "decay": 0.5,
        "dispersion": "variance",
        "precision": "float32",
        "epochs": 40 if method == "dual" else 5,
        "margin": "logits",
        "source": "eval_pass" if method not in ("herding", "moderate", "prototypicality") else "train",
        "epoch": 3,
        "centre": "mean",
        "num_clusters": 2,
        "per_class": False,
        "metric": "euclidean",
        "keep": "easy",
        "seed": 7,
        "iterations": 9,
        "feature_layer": "head",
    }
    default = cls()
    for argument in cls.identifying_arguments():
        kwargs = {argument: alternatives[argument]}
        if argument == "epoch" and method in ("herding", "moderate", "prototypicality"):
            kwargs["source"] = "train"
        if method == "entropy" and argument == "source":
            kwargs = {"source": "eval_pass"}
        changed = cls(**kwargs)
        assert changed.state_key != default.state_key, (method, argument)


class _Scaled(lp.EL2N):
    def __init__(self, epochs: int = 3, scale: float = 2.0, **kwargs) -> None:
        self.scale = scale
        super().__init__(epochs, **kwargs)


def test_a_subclass_argument_enters_the_identity_without_writing_hparams():
    assert _Scaled(scale=3.0).hparams() == {"epochs": [0, 3], "scale": 3.0}
    assert _Scaled(scale=3.0).state_key != _Scaled(scale=4.0).state_key


def test_an_argument_stored_under_another_name_is_refused_at_construction():
    class Renamed(lp.EL2N):
        def __init__(self, epochs: int = 3, strength: float = 1.0, **kwargs) -> None:
            self.alpha = strength
            super().__init__(epochs, **kwargs)

    with pytest.raises(TypeError, match=r"Renamed.__init__ takes 'strength' but stores no attribute.*self\.strength"):
        Renamed()


def test_a_hand_written_hparams_that_drops_an_argument_is_refused():
    class Drifting(lp.DynamicUncertainty):
        def hparams(self):
            return {"window": self.window}  # forgets source, as DUAL's did

    with pytest.raises(TypeError, match=r"Drifting.hparams\(\) returns .*constructor's arguments say"):
        Drifting(window=3)


def test_an_identifying_argument_that_is_not_plain_data_is_refused():
    class Holder(lp.EL2N):
        def __init__(self, epochs: int = 3, table: object = None, **kwargs) -> None:
            self.table = table
            super().__init__(epochs, **kwargs)

    with pytest.raises(TypeError, match=r"identifying argument 'table' holds ndarray.*non_identifying"):
        Holder(table=np.zeros(3))


def test_scores_carry_the_derived_identity():
    dual = lp.DUAL(epochs=6, window=3)
    fit([dual])
    assert dual.scores.hparams == {"epochs": 6, "window": 3, "source": "train"}


# ---------------------------------------------------------------------------------------------- hooks


def test_no_collector_overrides_an_underscore_member_of_its_bases():
    offenders = []
    for cls in _library_collector_classes():
        if cls is ScoreCollector:
            continue
        for name in cls.__dict__:
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                if any(name in base.__dict__ for base in cls.__mro__[1:]):
                    offenders.append(f"{cls.__qualname__}.{name}")
    assert offenders == []


def _function_of(member: object) -> object:
    return member.fget if isinstance(member, property) else getattr(member, "__func__", member)


@pytest.mark.parametrize("cls", _library_collector_classes(), ids=lambda cls: cls.__qualname__)
def test_every_override_carries_the_override_decorator(cls):
    missing = []
    for name, member in cls.__dict__.items():
        if name.startswith("__") or not callable(_function_of(member)):
            continue
        if any(name in base.__dict__ for base in cls.__mro__[1:] if base is not object):
            if not getattr(_function_of(member), "__override__", False):
                missing.append(name)
    assert missing == []


def test_feature_collectors_implement_the_public_score_features_hook():
    for cls in _library_collector_classes():
        if issubclass(cls, FeatureCollector) and cls is not FeatureCollector:
            assert "score_features" in cls.__dict__, cls


# ---------------------------------------------------------------------------------------------- merges


def test_the_harness_runs_every_merge_through_a_custom_collector():
    """The exactness, 2-process DDP, resume and no-host-sync tests run every case of CASES; this one
    declares each merge the README offers."""
    reduces = {declared.reduce for declared in EveryMerge().state_spec().values()}
    assert reduces == {"sum", "last", "max", "min", None}
    assert "every_merge" in CASES


def test_every_merge_is_exact_part_by_part():
    collector = EveryMerge()
    _, model = fit([collector])
    parts, extras = every_merge_parts(model.trajectory()), collector.scores.extras
    for name in ("peak", "trough", "latest", "rises"):
        np.testing.assert_allclose(extras[name], parts[name], rtol=1e-6, atol=1e-6, err_msg=name)
    assert collector.epochs_collected == 6


def test_max_and_min_merge_from_the_first_value_not_the_fill():
    """A state that starts at 0 must not keep 0 as its maximum of negative values (nor minimum of positive ones)."""
    collector = EveryMerge()
    fit([collector])
    assert (collector.scores.extras["peak"] < 0).all()
    assert (collector.scores.extras["trough"] > 0).all()


# ---------------------------------------------------------------------------------------------- defects


@pytest.mark.parametrize(
    "make",
    [
        lambda: lp.DUAL(epochs=np.int64(5), window=np.int64(3)),
        lambda: lp.DynamicUncertainty(window=np.int32(3)),
        lambda: lp.TDDS(trajectory=np.int64(8), window=np.int64(4)),
        lambda: lp.EL2N(epochs=np.int64(3)),
        lambda: lp.EL2N(epochs=(np.int64(1), np.int64(3))),
        lambda: lp.AUM(epochs=np.int16(4)),
        lambda: lp.Entropy(epoch=np.int64(2)),
        lambda: lp.Herding(source="train", epoch=np.int64(1)),
        lambda: lp.Prototypicality(num_clusters=np.int64(2), iterations=np.int64(5), seed=np.int64(1)),
        lambda: lp.Forgetting(num_samples=np.int64(NUM_SAMPLES)),
    ],
    ids=["dual", "du", "tdds", "el2n", "el2n-range", "aum", "entropy", "herding", "prototypicality", "num_samples"],
)
def test_numpy_integers_are_accepted_and_stored_as_int(make):
    collector = make()
    hparams = collector.hparams()
    assert json.dumps(hparams)  # plain ints, not np.int64
    for value in hparams.values():
        assert not isinstance(value, np.generic)


def test_numpy_integers_give_the_same_identity_and_scores_as_ints():
    a, b = lp.DUAL(epochs=np.int64(5), window=np.int64(3)), lp.DUAL(epochs=5, window=3, name="plain")
    assert a.hparams() == lp.DUAL(epochs=5, window=3).hparams()
    fit([a, b], epochs=5)
    np.testing.assert_array_equal(a.scores.values, b.scores.values)


def test_kmeans_takes_numpy_integers():
    from lightning_prune.collectors import kmeans

    points = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    expected = kmeans(points, 3, seed=1, iterations=5)
    result = kmeans(points, np.int64(3), seed=np.int64(1), iterations=np.int32(5), chunk_size=np.int64(8))
    assert torch.equal(result.assignment, expected.assignment)
    with pytest.raises(ValueError, match="kmeans seed must be an integer"):
        kmeans(points, 3, seed=1.5)


@pytest.mark.parametrize("value", [True, 2.0, "5"])
def test_booleans_floats_and_strings_stay_refused(value):
    with pytest.raises(ValueError, match="DUAL epochs must be an integer"):
        lp.DUAL(epochs=value, window=2)


def test_two_identical_collectors_added_after_the_trainer_is_built_name_the_fix():
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=2, callbacks=[lp.Forgetting()], logger=False, enable_progress_bar=False
    )
    trainer.callbacks.append(lp.Forgetting())  # Lightning checks unique state keys only in Trainer(...)
    with pytest.raises(ValueError, match=r"Two Forgetting collectors.*Pass name=\.\.\. to tell them apart"):
        trainer.fit(KnownLogitsModel(), train_dataloaders=make_loader())


def test_check_unique_state_keys_before_building_the_trainer():
    with pytest.raises(ValueError, match=r"name=\.\.\."):
        check_unique_state_keys([lp.TDDS(trajectory=4, window=3), lp.TDDS(trajectory=4, window=3)])
    check_unique_state_keys([lp.TDDS(trajectory=4, window=3), lp.TDDS(trajectory=4, window=3, name="b")])


@pytest.mark.parametrize(
    ("make", "max_steps", "need"),
    [
        (lambda: lp.DUAL(epochs=6, window=3), 30, r"DUAL\(epochs=6\) needs at least 6 training epochs"),
        (lambda: lp.EL2N(epochs=(2, 7)), 40, r"EL2N\(epochs=\(2, 7\)\) averages epochs 2\.\.6"),
        (lambda: lp.TDDS(trajectory=8, window=4), 70, r"TDDS\(trajectory=8\) needs at least 8"),
    ],
    ids=["dual", "el2n", "tdds"],
)
def test_max_steps_shorter_than_the_collectors_need_is_refused_up_front(make, max_steps, need):
    # 37 samples in batches of 4: 10 optimizer steps per epoch
    with pytest.raises(ValueError, match=need + rf".*max_steps={max_steps} ends the run after \d epoch"):
        fit([make()], epochs=EPOCHS, max_steps=max_steps)


def test_max_steps_long_enough_and_gradient_accumulation_are_accepted():
    dual = lp.DUAL(epochs=6, window=3)
    fit([dual], epochs=EPOCHS, max_steps=30, accumulate_grad_batches=2)  # 5 steps per epoch: 6 epochs
    assert dual.epochs_collected == 6
    with pytest.raises(ValueError, match=r"max_steps=29 ends the run after 6 epoch.*at least 35"):
        fit([lp.DUAL(epochs=7, window=3)], epochs=EPOCHS, max_steps=29, accumulate_grad_batches=2)


def test_resuming_on_a_smaller_data_set_is_refused(tmp_path):
    class Stop(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit([lp.Forgetting()], epochs=4, extra_callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True), Stop()])
    smaller = DataLoader(Subset(make_loader().dataset, range(30)), batch_size=4, shuffle=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=4,
        callbacks=[lp.Forgetting()],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    with pytest.raises(ValueError, match=r"checkpoint collected over 37 samples.*training set has 30"):
        trainer.fit(KnownLogitsModel(epochs=4), train_dataloaders=smaller, ckpt_path=str(tmp_path / "last.ckpt"))


# ---------------------------------------------------------------------------------------------- influence


class _SoftmaxHead(nn.Module):
    """A classifier whose forward applies a non-linearity after its last Linear."""

    def __init__(self, after: str) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 4), nn.Tanh())
        self.fc = nn.Linear(4, 3)
        self.after = after

    def forward(self, x):
        logits = self.fc(self.body(x))
        return torch.softmax(logits, dim=1) if self.after == "softmax" else torch.relu(logits)


@pytest.mark.parametrize("after", ["softmax", "relu"])
def test_influence_refuses_a_last_linear_followed_by_a_non_linearity(after):
    from lightning_prune.influence import influence_vectors

    torch.manual_seed(0)
    data = lp.IndexedDataset(TensorDataset(torch.randn(12, 5), torch.randint(0, 3, (12,))))
    with pytest.raises(ValueError, match=r"model's output is not the output of its final linear layer 'fc'"):
        influence_vectors(_SoftmaxHead(after), DataLoader(data, batch_size=4), damping=0.1)


def test_grand_refuses_logits_that_are_not_the_last_linear_output():
    class Softmaxed(KnownLogitsModel):
        def training_step(self, batch, batch_idx):
            x, _, _ = batch
            return {"loss": self.dummy.pow(2).sum(), "logits": torch.softmax(self(x), dim=1)}

    with pytest.raises(ValueError, match=r"GraNd.*logits are not the output of the final linear layer"):
        fit([lp.GraNd(epochs=2)], model=Softmaxed())


# ---------------------------------------------------------------------------------------------- DDP


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from lightning_prune.distributed import all_gather

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecated collective must not warn
        gathered = all_gather(torch.tensor([rank, 10 + rank]))
    torch.save(gathered, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_the_collectors_gather_warns_nothing_on_two_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_gather_worker, args=(2, port, str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        assert torch.load(tmp_path / f"rank{rank}.pt").tolist() == [[0, 10], [1, 11]]


@pytest.mark.slow
def test_a_ddp_collector_fit_prints_no_all_gather_deprecation(tmp_path):
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "ddp_collectors_worker.py"), str(tmp_path), "2", "forgetting,every_merge"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all_gather is deprecated" not in result.stdout + result.stderr
    rank0, rank1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    np.testing.assert_array_equal(rank0["every_merge"], rank1["every_merge"])
