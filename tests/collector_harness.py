"""Shared fixtures for collector tests: a model whose logits are known in advance, and references.

``KnownLogitsModel`` produces, for sample i in epoch t, the logits ``head(features[t, i])`` of a
frozen linear head over a fixed random feature table; training only moves a dummy parameter. The
logits of every (epoch, sample) are therefore known before training, whatever the batch order,
the number of processes or an interruption, so each collector can be compared with a brute-force
reference computed from the stacked per-epoch probabilities.

The model's input for sample i is the number i itself (see ``make_dataset``), so an eval-mode
forward pass over the data set (``source="eval_pass"`` collectors) produces the same known logits
and features as the training pass; after the last epoch the model is the last epoch's.

Each collector under test is registered in ``CASES`` with a factory and a reference computed from
the stacked per-epoch :class:`Trajectory`; the exactness, DDP and resume tests are parametrised over it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

import lightning_prune as lp
from lightning_prune.collectors import (
    AUM,
    EL2N,
    DynamicUncertainty,
    Entropy,
    EpochNeed,
    GraNd,
    Herding,
    Moderate,
    Prototypicality,
)

NUM_SAMPLES = 37  # not divisible by world size x batch size
NUM_CLASSES = 5
HIDDEN = 6
EPOCHS = 8
BATCH_SIZE = 4
CRASH_EPOCH = 5  # the resume test crashes at the start of this epoch


def make_labels(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, NUM_CLASSES, (NUM_SAMPLES,), generator=torch.Generator().manual_seed(seed))


def make_dataset(seed: int = 0) -> lp.IndexedDataset:
    # each input is its sample's number, so a plain forward(x) can look up the known features
    inputs = torch.arange(NUM_SAMPLES, dtype=torch.float32).unsqueeze(1)
    return lp.IndexedDataset(TensorDataset(inputs, make_labels(seed)))


def make_loader(shuffle: bool = True, seed: int = 0) -> DataLoader:
    return DataLoader(make_dataset(seed), batch_size=BATCH_SIZE, shuffle=shuffle)


class KnownLogitsModel(pl.LightningModule):
    def __init__(self, epochs: int = EPOCHS, seed: int = 0, with_validation: bool = False) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed + 1)
        # labels leak into the features so that some samples are learned, some forgotten
        labels = make_labels(seed)
        table = torch.randn(epochs, NUM_SAMPLES, HIDDEN, generator=generator)
        table[:, :, :NUM_CLASSES] += 1.5 * nn.functional.one_hot(labels, NUM_CLASSES).float()
        self.register_buffer("features", table)
        self.head = nn.Linear(HIDDEN, NUM_CLASSES)
        with torch.no_grad():
            self.head.weight.copy_(
                torch.eye(NUM_CLASSES, HIDDEN) + 0.1 * torch.randn(NUM_CLASSES, HIDDEN, generator=generator)
            )
            self.head.bias.copy_(0.1 * torch.randn(NUM_CLASSES, generator=generator))
        self.head.requires_grad_(False)
        self.dummy = nn.Parameter(torch.ones(1))
        self.with_validation = with_validation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # after training, current_epoch is one past the last epoch; the model is the last epoch's
        epoch = min(self.current_epoch, self.features.shape[0] - 1)
        return self.head(self.features[epoch, x[:, 0].long()])

    def training_step(self, batch, batch_idx):
        x, _, _ = batch
        return {"loss": self.dummy.pow(2).sum(), "logits": self(x)}

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.dummy.pow(2).sum())

    def configure_optimizers(self):
        return torch.optim.SGD([self.dummy], lr=0.01)

    def expected_probs(self) -> np.ndarray:
        """[epochs, N, C] float64 probabilities of every (epoch, sample)."""
        with torch.no_grad():
            logits = self.head.double()(self.features.double())
            self.head.float()
        return torch.softmax(logits, dim=-1).numpy()

    def expected_logits(self) -> np.ndarray:
        """[epochs, N, C] float64 logits of every (epoch, sample)."""
        with torch.no_grad():
            logits = self.head.double()(self.features.double())
            self.head.float()
        return logits.numpy()

    def expected_features(self) -> np.ndarray:
        """[epochs, N, H] float64 inputs of the final linear layer (what the feature hook captures)."""
        return self.features.double().numpy()

    def trajectory(self) -> Trajectory:
        return Trajectory(
            probs=self.expected_probs(),
            logits=self.expected_logits(),
            features=self.expected_features(),
            labels=make_labels().numpy(),
        )


class DictBatchModel(KnownLogitsModel):
    """KnownLogitsModel reading dict batches (``{"x", "label", "index"}``), as a LitData set of dict items makes."""

    def training_step(self, batch, batch_idx):
        x, _, _ = lp.unpack_batch(batch)
        return {"loss": self.dummy.pow(2).sum(), "logits": self(x)}


class SeenIndices(pl.Callback):
    """The sample indices of every training batch of a dict-batch fit, in the order they came."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += batch["index"].tolist()


@dataclass
class Trajectory:
    """Everything the model produces over a run, stacked: what the references start from."""

    probs: np.ndarray  # [E, N, C]
    logits: np.ndarray  # [E, N, C]
    features: np.ndarray  # [E, N, H]
    labels: np.ndarray  # [N]


def tdds_reference(
    probs: np.ndarray, trajectory: int, window: int, decay: float, dispersion: str = "norm"
) -> np.ndarray:
    probs = probs[:trajectory]
    log_probs = np.log(probs + 1e-8)
    differences = np.abs(probs[1:] * (log_probs[1:] - log_probs[:-1])).sum(axis=2)  # [T-1, N]
    score = np.zeros(probs.shape[1])
    for start in range(trajectory - window + 1):
        window_terms = differences[start : start + window - 1]  # d_{k+1} .. d_{k+K-1}
        deviations = window_terms - window_terms.mean(axis=0)
        spread = np.sqrt((deviations**2).sum(axis=0)) if dispersion == "norm" else (deviations**2).mean(axis=0)
        weight = decay * (1 - decay) ** (trajectory - window - start)
        score += weight * spread
    return score


def forgetting_reference(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    correct = probs.argmax(axis=2) == labels[None, :]  # [E, N]
    events = (correct[:-1] & ~correct[1:]).sum(axis=0)
    return np.where(correct.any(axis=0), events, correct.shape[0]).astype(float)


def _mean_over(values: np.ndarray, epochs: tuple[int, int | None]) -> np.ndarray:
    start, stop = epochs
    return values[start:stop].mean(axis=0)


def error_norms(t: Trajectory) -> np.ndarray:
    """[E, N] ||p - onehot(y)||_2."""
    onehot = np.eye(t.probs.shape[2])[t.labels]
    return np.linalg.norm(t.probs - onehot[None], axis=2)


def el2n_reference(t: Trajectory, epochs: tuple[int, int]) -> np.ndarray:
    return _mean_over(error_norms(t), epochs)


def grand_reference(t: Trajectory, epochs: tuple[int, int]) -> np.ndarray:
    # brute force: the per-sample gradient of CE w.r.t. [W, b] of the head is (p - y) [h; 1]^T
    onehot = np.eye(t.probs.shape[2])[t.labels]
    ones = np.ones((*t.features.shape[:2], 1))
    augmented = np.concatenate([t.features, ones], axis=2)  # [E, N, H+1]
    gradients = (t.probs - onehot[None])[..., :, None] * augmented[..., None, :]  # [E, N, C, H+1]
    return _mean_over(np.sqrt((gradients**2).sum(axis=(2, 3))), epochs)


def margins(t: Trajectory, on: str = "probs") -> np.ndarray:
    """[E, N] value of the label minus the largest other value."""
    values = t.probs if on == "probs" else t.logits
    num_samples = values.shape[1]
    target = values[:, np.arange(num_samples), t.labels]
    others = values.copy()
    others[:, np.arange(num_samples), t.labels] = -np.inf
    return target - others.max(axis=2)


def aum_reference(t: Trajectory, epochs: tuple[int, int | None] = (0, None), on: str = "probs") -> np.ndarray:
    return -_mean_over(margins(t, on), epochs)


def dynamic_uncertainty_reference(t: Trajectory, window: int) -> np.ndarray:
    target = t.probs[:, np.arange(t.probs.shape[1]), t.labels]  # [E, N]
    stds = [target[k : k + window].std(axis=0, ddof=1) for k in range(target.shape[0] - window + 1)]
    return np.mean(stds, axis=0)


def dual_reference(t: Trajectory, epochs: int, window: int) -> np.ndarray:
    """The DUAL paper's score over the first ``epochs`` epochs, written out plainly."""
    target = t.probs[:epochs, np.arange(t.probs.shape[1]), t.labels]  # [T, N]
    windows = [target[k : k + window] for k in range(epochs - window + 1)]
    return np.mean([10 * w.std(axis=0, ddof=1) * (1 - w.mean(axis=0)) for w in windows], axis=0)


def entropy_reference(t: Trajectory, epoch: int = -1) -> np.ndarray:
    probs = t.probs[epoch]
    return -(probs * np.log(probs)).sum(axis=1)


def final_features(t: Trajectory, epoch: int = -1) -> np.ndarray:
    """The features as the collectors store them: rounded to float16 from the model's float32."""
    return t.features[epoch].astype(np.float32).astype(np.float16).astype(np.float64)


def herding_reference(t: Trajectory, epoch: int = -1) -> np.ndarray:
    features, scores = final_features(t, epoch), np.zeros(t.labels.size)
    for label in np.unique(t.labels):
        members = np.flatnonzero(t.labels == label)
        points, mean, picked = features[members], features[members].mean(axis=0), []
        for step in range(members.size):
            distances = [
                np.inf if i in picked else np.linalg.norm((step + 1) * mean - points[picked].sum(axis=0) - points[i])
                for i in range(members.size)
            ]
            picked.append(int(np.argmin(distances)))
        scores[members[picked]] = 1.0 - np.arange(members.size) / members.size
    return scores


def moderate_reference(t: Trajectory) -> np.ndarray:
    features, distance = final_features(t), np.zeros(t.labels.size)
    for label in np.unique(t.labels):
        members = np.flatnonzero(t.labels == label)
        distance[members] = np.linalg.norm(features[members] - np.median(features[members], axis=0), axis=1)
    return -np.abs(distance - np.median(distance))


def class_prototype_reference(t: Trajectory, metric: str) -> np.ndarray:
    """Distance to the class centroid (k-means with one cluster per class)."""
    features, distance = final_features(t), np.zeros(t.labels.size)
    if metric == "cosine":
        features = features / np.linalg.norm(features, axis=1, keepdims=True)
    for label in np.unique(t.labels):
        members = np.flatnonzero(t.labels == label)
        centre = features[members].mean(axis=0)
        if metric == "cosine":
            distance[members] = 1.0 - features[members] @ (centre / np.linalg.norm(centre))
        else:
            distance[members] = np.linalg.norm(features[members] - centre, axis=1)
    return distance


def readme_collector_class() -> type:
    """The collector of docs/methods.md's "Write your own collector" section, executed as written."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    section = page.split("## Write your own collector", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/methods.md", "exec"), namespace)
    return namespace["MeanLoss"]


def mean_loss_reference(t: Trajectory, epochs: int) -> np.ndarray:
    target = np.take_along_axis(t.probs[:epochs], t.labels[None, :, None], axis=2)[..., 0]
    return (-np.log(target)).mean(axis=0)


class EveryMerge(lp.ScoreCollector):
    """A custom collector on the public contract that uses every merge the README offers.

    Over epochs ``first .. stop-1``, from the label's probability ``p``: the highest ``log p``
    (``reduce="max"``: negative values, so a merge with the zero fill would show), the lowest ``p``
    (``"min"``: positive values, in float64), the latest ``p`` (``"last"``), the mean ``p`` (``"sum"``),
    and the number of rises of ``p`` from one collected epoch to the next, counted by ``fold()`` in
    state that only it writes (``reduce=None``).
    """

    method = "every_merge"

    def __init__(self, first: int = 1, stop: int = 7, **kwargs) -> None:
        self.first = first
        self.stop = stop
        super().__init__(**kwargs)

    @override
    def state_spec(self):
        return {
            "peak": lp.PerSample(reduce="max"),
            "trough": lp.PerSample(reduce="min", dtype=torch.float64),
            "latest": lp.PerSample(reduce="last"),
            "total": lp.PerSample(reduce="sum"),
            "previous": lp.PerSample(reduce=None, fill=-1.0),
            "rises": lp.PerSample(reduce=None, dtype=torch.int32),
        }

    @override
    def collects(self, epoch):
        return self.first <= epoch < self.stop

    @override
    def needs(self):
        return EpochNeed(f"stop={self.stop}", self.stop)

    @override
    def batch_values(self, view):
        probs = torch.softmax(view.logits.float(), dim=1).gather(1, view.targets[:, None])[:, 0]
        return {"peak": probs.log(), "trough": probs.double(), "latest": probs, "total": probs}

    @override
    def fold(self, epoch, values, state, seen):
        probs, previous = values["latest"], state["previous"]
        state["rises"] += (seen & (previous >= 0) & (probs > previous)).to(torch.int32)
        previous.copy_(torch.where(seen, probs, previous))

    @override
    def score(self, state):
        mean = state["total"] / state["times_seen"]
        return state["peak"] - state["trough"] + state["rises"] + state["latest"] + mean

    @override
    def extras(self, state):
        return {name: state[name].clone() for name in ("peak", "trough", "latest", "rises")}


def every_merge_parts(t: Trajectory, first: int = 1, stop: int = 7) -> dict[str, np.ndarray]:
    target = t.probs[first:stop, np.arange(t.probs.shape[1]), t.labels]  # [E, N]
    return {
        "peak": np.log(target).max(axis=0),
        "trough": target.min(axis=0),
        "latest": target[-1],
        "mean": target.mean(axis=0),
        "rises": (target[1:] > target[:-1]).sum(axis=0).astype(float),
    }


def every_merge_reference(t: Trajectory) -> np.ndarray:
    parts = every_merge_parts(t)
    return parts["peak"] - parts["trough"] + parts["rises"] + parts["latest"] + parts["mean"]


@dataclass
class Case:
    make: Callable[[], lp.ScoreCollector]
    reference: Callable[[Trajectory], np.ndarray]
    rtol: float = 1e-5
    atol: float = 1e-7
    # epochs collected before the resume test's crash, when not min(CRASH_EPOCH, epochs of a full run)
    epochs_before_crash: int | None = None

    def collected_before_crash(self, full_run_epochs: int) -> int:
        return min(CRASH_EPOCH, full_run_epochs) if self.epochs_before_crash is None else self.epochs_before_crash


CASES: dict[str, Case] = {
    "every_merge": Case(make=lambda: EveryMerge(), reference=every_merge_reference, atol=1e-6, epochs_before_crash=4),
    "readme_mean_loss": Case(
        make=lambda: readme_collector_class()(epochs=5),
        reference=lambda t: mean_loss_reference(t, 5),
        rtol=1e-5,
        atol=1e-6,
    ),
    "tdds": Case(
        make=lambda: lp.TDDS(trajectory=EPOCHS, window=4, decay=0.9, precision="float32"),
        reference=lambda t: tdds_reference(t.probs, EPOCHS, 4, 0.9),
    ),
    "tdds_variance_short": Case(
        make=lambda: lp.TDDS(trajectory=6, window=3, decay=0.5, dispersion="variance", precision="float32"),
        reference=lambda t: tdds_reference(t.probs, 6, 3, 0.5, "variance"),
    ),
    "forgetting": Case(
        make=lambda: lp.Forgetting(), reference=lambda t: forgetting_reference(t.probs, t.labels), rtol=0, atol=0
    ),
    "el2n": Case(
        make=lambda: EL2N(epochs=(2, 7)), reference=lambda t: el2n_reference(t, (2, 7)), epochs_before_crash=3
    ),
    "grand": Case(make=lambda: GraNd(epochs=4), reference=lambda t: grand_reference(t, (0, 4))),
    "aum": Case(make=lambda: AUM(), reference=aum_reference, atol=1e-6),
    "aum_logits_range": Case(
        make=lambda: AUM(epochs=(1, 6), margin="logits"),
        reference=lambda t: aum_reference(t, (1, 6), "logits"),
        atol=1e-6,
        epochs_before_crash=4,
    ),
    "dynamic_uncertainty": Case(
        make=lambda: DynamicUncertainty(window=3), reference=lambda t: dynamic_uncertainty_reference(t, 3), atol=1e-6
    ),
    "dynamic_uncertainty_eval_pass": Case(
        make=lambda: DynamicUncertainty(window=4, source="eval_pass"),
        reference=lambda t: dynamic_uncertainty_reference(t, 4),
        atol=1e-6,
    ),
    "dual": Case(make=lambda: lp.DUAL(epochs=6, window=3), reference=lambda t: dual_reference(t, 6, 3), atol=1e-5),
    "dual_all_epochs": Case(
        make=lambda: lp.DUAL(epochs=EPOCHS, window=4), reference=lambda t: dual_reference(t, EPOCHS, 4), atol=1e-5
    ),
    "entropy": Case(make=lambda: Entropy(), reference=entropy_reference, atol=1e-6),
    "entropy_epoch": Case(make=lambda: Entropy(epoch=3), reference=lambda t: entropy_reference(t, 3), atol=1e-6),
    # a loader of its own: under DDP it is re-sharded with a DistributedSampler
    "entropy_eval_pass": Case(
        make=lambda: Entropy(source="eval_pass", dataloader=make_loader(shuffle=False)),
        reference=entropy_reference,
        atol=1e-6,
        epochs_before_crash=0,
    ),
    "herding": Case(make=lambda: Herding(), reference=herding_reference, rtol=0, atol=1e-12, epochs_before_crash=0),
    "herding_train": Case(
        make=lambda: Herding(source="train"), reference=herding_reference, rtol=0, atol=1e-12, epochs_before_crash=0
    ),
    # its state is in the resume test's checkpoint (epoch 2 < the crash epoch): the resume path of feature collectors
    "herding_train_epoch2": Case(
        make=lambda: Herding(source="train", epoch=2),
        reference=lambda t: herding_reference(t, 2),
        rtol=0,
        atol=1e-12,
        epochs_before_crash=1,
    ),
    "moderate": Case(make=lambda: Moderate(), reference=moderate_reference, atol=1e-5, epochs_before_crash=0),
    "prototypicality": Case(
        make=lambda: Prototypicality(),
        reference=lambda t: class_prototype_reference(t, "cosine"),
        atol=1e-6,
        epochs_before_crash=0,
    ),
    "prototypicality_euclidean_easy": Case(
        make=lambda: Prototypicality(metric="euclidean", keep="easy"),
        reference=lambda t: -class_prototype_reference(t, "euclidean"),
        atol=1e-5,
        epochs_before_crash=0,
    ),
}


def fit(
    collectors: list[pl.Callback],
    *,
    epochs: int = EPOCHS,
    model: KnownLogitsModel | None = None,
    extra_callbacks: list[pl.Callback] | None = None,
    ckpt_path: str | None = None,
    default_root_dir: str | None = None,
    with_validation: bool = False,
    **trainer_kwargs,
) -> tuple[pl.Trainer, KnownLogitsModel]:
    model = model or KnownLogitsModel(epochs=epochs)
    enable_checkpointing = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in extra_callbacks or [])
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=[*collectors, *(extra_callbacks or [])],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=enable_checkpointing,
        default_root_dir=default_root_dir,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    val_loader = make_loader(shuffle=False) if with_validation else None
    trainer.fit(model, train_dataloaders=make_loader(), val_dataloaders=val_loader, ckpt_path=ckpt_path)
    return trainer, model


SYNCING_METHODS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__")
"""Tensor methods that make the host wait for the device (each blocks a GPU pipeline)."""


def host_syncs_in_middle_batches(monkeypatch, callback: pl.Callback) -> list[str]:
    """Spy on ``callback.on_train_batch_end``: the returned list fills with the syncing calls it makes
    between the first and the last batch of an epoch (the first and last may synchronise once)."""
    calls: list[str] = []
    inside = {"middle_batch": False}
    for method in SYNCING_METHODS:
        original = getattr(torch.Tensor, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            if inside["middle_batch"]:
                calls.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, spy)
    hook = callback.on_train_batch_end

    def watched(trainer, pl_module, outputs, batch, batch_idx):
        inside["middle_batch"] = 0 < batch_idx < trainer.num_training_batches - 1
        try:
            hook(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            inside["middle_batch"] = False

    monkeypatch.setattr(callback, "on_train_batch_end", watched)
    return calls
