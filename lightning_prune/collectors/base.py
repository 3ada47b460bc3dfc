"""``ScoreCollector``: the base ``Callback`` every training-dynamics scorer builds on.

What the base class owns, so that each method only writes its arithmetic:

* **Reading the batch.** In ``on_train_batch_end`` it takes the logits from the dict that
  ``training_step`` returns (``outputs["logits"]``) and the targets and sample indices from the
  batch (see :class:`~lightning_prune.IndexedDataset`); an *adapter* replaces this for models and
  batches of other shapes. Methods that need penultimate features get them from a forward hook
  on the final linear layer.
* **Per-sample state keyed by sample index**, on the model's device, written without host
  synchronisation on the hot path (``torch.where`` instead of boolean indexing).
* **Ranks.** A ``DistributedSampler`` deals each rank a different share every epoch and pads the
  last batches with duplicates. At the end of each epoch the rows a rank wrote are gathered with the
  strategy's ``all_gather``, duplicates are dropped (first occurrence in rank order wins) and every
  rank ends with identical state, so scores on W processes equal scores on one.
* **Checkpoints.** All state is in ``state_dict()``; a run resumed from an end-of-epoch checkpoint
  gives the same scores as an uninterrupted one.

A method declares its per-sample state (:meth:`ScoreCollector.state_spec`, see
:mod:`lightning_prune.collectors.state`) and writes its formula (:meth:`~ScoreCollector.batch_values`,
:meth:`~ScoreCollector.score`, optionally :meth:`~ScoreCollector.fold` and
:meth:`~ScoreCollector.extras`); :meth:`~ScoreCollector.collects` and :meth:`~ScoreCollector.needs`
say which epochs it reads and how long a run it needs. Every built-in collector is written against
this public contract only: no subclass overrides an underscore method of the base.

**Identity.** :meth:`ScoreCollector.hparams` (recorded in score files, part of the checkpoint's
``state_key``, compared when a pipeline reuses a score file) is derived from the constructor's
arguments, so it cannot drift from them: every parameter of the subclass's ``__init__`` (and of the
base ``__init__``s its ``**kwargs`` reach) is recorded under its name, with the value of the
attribute of that name (``self.window`` for ``window``), except the arguments that do not change
the scores: ``adapter``, ``num_samples``, ``save_path``, ``dataloader`` and ``name`` (``name`` goes
into the state key separately), ``feature_layer`` for collectors that read no features, and any a
class lists in ``non_identifying``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_prune.collectors.arguments import is_integer, plain
from lightning_prune.collectors.batch_checks import BatchFaults, check_first_batch
from lightning_prune.collectors.state import (
    CLASSES,
    FEATURES,
    PREDICTED_LABEL,
    PerSample,
    allocate_declared,
    epoch_row,
    merge_epoch,
)
from lightning_prune.data.indexed import unpack_batch
from lightning_prune.data.streaming import check_streaming_split, index_space_size
from lightning_prune.distributed import GatherFn, RankRows, all_gather, distributed_ready, first_occurrence
from lightning_prune.models.layers import find_last_linear
from lightning_prune.selection.meaning import MeaningDeclaration, ScoreMeaning, meaning_of
from lightning_prune.selection.scores import Scores
from lightning_prune.trainer_access import changes_epoch_length, checkpoint_completed_epochs, trainer_callbacks

STATE_FORMAT_VERSION = 1

NON_IDENTIFYING = frozenset({"adapter", "num_samples", "save_path", "dataloader", "loss_fn", "name"})
"""Constructor arguments that never enter a collector's identity: how batches are read, where
scores are written, the data set's size (checked against the data instead), objects a file cannot
record as plain data (the eval-pass loader, InfoBatch's ``loss_fn``) and ``name`` (added to the
state key by itself)."""

_Init = TypeVar("_Init", bound=Callable[..., None])


@dataclass
class BatchView:
    """What a collector reads from one training batch.

    Attributes:
        logits: ``[B, C]`` logits of the training forward pass.
        targets: ``[B]`` integer class labels.
        indices: ``[B]`` sample indices into the full training set.
        features: ``[B, H]`` inputs of the final linear layer, for methods that need them.
    """

    logits: Tensor
    targets: Tensor
    indices: Tensor
    features: Tensor | None = None
    epoch: int | None = None
    """The epoch (counted from 0) the batch is collected for; set by the base before
    :meth:`ScoreCollector.batch_values` reads the view."""


@dataclass(frozen=True)
class EpochNeed:
    """How long a run a collector needs, from :meth:`ScoreCollector.needs`; checked when fit starts.

    Attributes:
        setting: the constructor setting that asks for it, as the messages print it (``"window=10"``).
        epochs: the training epochs the run must reach (epochs ``0 .. epochs-1``); refused up front
            when ``max_epochs`` or ``max_steps`` stops the run earlier.
        to_score: the epochs that must be collected before ``.scores`` exist.
        describe: what ``to_score`` epochs are, for the error when fewer were collected.
        what: how the refusal describes the need (default: ``"needs at least {epochs} training epochs"``).
    """

    setting: str
    epochs: int
    to_score: int = 1
    describe: str = "one full epoch"
    what: str = ""

    @property
    def requirement(self) -> str:
        return self.what or f"needs at least {self.epochs} training epochs"


BatchAdapter = Callable[[Any, Any, "pl.LightningModule"], BatchView]
"""``adapter(outputs, batch, pl_module) -> BatchView``: reads a batch of any shape."""


def default_adapter(outputs: Any, batch: Any, pl_module: pl.LightningModule, logits_key: str = "logits") -> BatchView:
    """Logits from ``training_step``'s returned dict, targets and indices from the batch."""
    if not isinstance(outputs, Mapping) or logits_key not in outputs:
        got = f"a dict with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else type(outputs).__name__
        raise ValueError(
            f"Score collectors read the logits from training_step's return value, which must be a dict "
            f"with a {logits_key!r} entry, e.g. `return {{'loss': loss, '{logits_key}': logits}}`; it returned "
            f"{got}. If your training_step cannot return logits, pass `adapter=lightning_prune.recompute_logits` "
            "or your own adapter to the collector."
        )
    _, targets, indices = unpack_batch(batch)
    return BatchView(logits=outputs[logits_key], targets=targets, indices=indices)


def recompute_logits(outputs: Any, batch: Any, pl_module: pl.LightningModule) -> BatchView:
    """Adapter for models whose ``training_step`` cannot return logits.

    Runs ``pl_module(inputs)`` once more, without gradients and in eval mode (so batch-norm running
    statistics are not disturbed). The logits are then those of the updated model in eval mode,
    not of the training forward pass: slower, and slightly different dynamics.
    """
    inputs, targets, indices = unpack_batch(batch)
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            logits = pl_module(inputs)
    finally:
        pl_module.train(was_training)
    return BatchView(logits=logits, targets=targets, indices=indices)


def _find_final_linear(pl_module: nn.Module, name: str | None) -> nn.Linear:
    return find_last_linear(pl_module, name, purpose="this collector", setting="feature_layer")[1]


def _is_collector_state(state: Any) -> bool:
    return isinstance(state, Mapping) and "format_version" in state and "buffers" in state


def check_unique_state_keys(callbacks: Iterable[pl.Callback]) -> None:
    """Refuse two collectors with one ``state_key`` (same class, settings and ``name``).

    Their checkpoint states would overwrite each other. Lightning's ``Trainer(callbacks=...)`` refuses
    them too, but without naming the fix, and not for collectors added to ``trainer.callbacks`` later;
    call this before building the Trainer for the clear message. Every collector runs it when fit starts.
    """
    seen: dict[str, ScoreCollector] = {}
    for callback in callbacks:
        if not isinstance(callback, ScoreCollector):
            continue
        key = callback.state_key
        if key in seen and seen[key] is not callback:
            cls = type(callback).__name__
            raise ValueError(
                f"Two {cls} collectors with the same settings share the state key {key!r}, so their checkpoint "
                f"states would overwrite each other. Pass name=... to tell them apart, e.g. {cls}(..., name='a') "
                f"and {cls}(..., name='b'), or attach one of them."
            )
        seen[key] = callback


_IDENTIFYING: dict[type, tuple[str, ...]] = {}
""":meth:`ScoreCollector.identifying_arguments` by class, read from the signatures once."""


def _identity_checked(init: _Init) -> _Init:
    """Wrap a collector subclass's ``__init__``: once the outermost one returns, check its identity."""

    @functools.wraps(init)
    def wrapper(self: ScoreCollector, *args: Any, **kwargs: Any) -> None:
        depth = self.__dict__.get("_init_depth", 0)
        self.__dict__["_init_depth"] = depth + 1
        try:
            init(self, *args, **kwargs)
        finally:
            self.__dict__["_init_depth"] = depth
        if depth == 0:
            del self.__dict__["_init_depth"]
            self._check_identity()

    return wrapper  # type: ignore[return-value]


class ScoreCollector(pl.Callback):
    """Base class of lightning-prune's training-dynamics collectors.

    Args:
        adapter: reads ``(logits, targets, indices)`` from a batch; defaults to
            :func:`default_adapter`. See :func:`recompute_logits` for models that cannot return logits.
        num_samples: size N of the training set; inferred from the train dataloader's dataset if omitted.
        save_path: if given, the scores are written there (rank 0) at the end of ``fit``.
        feature_layer: for methods that need penultimate features, the name of the final linear layer
            (default: the last ``nn.Linear`` of the model).
        name: distinguishes two collectors of the same class and settings in one fit (and checkpoint):
            two ``TDDS()`` need ``TDDS(name="a")`` and ``TDDS(name="b")``.

    Class attributes a subclass may set:
        method: the name its scores carry (``Scores.method``).
        needs_features: whether batches carry ``BatchView.features`` (the inputs of the final linear
            layer, captured by a forward hook); ``feature_layer`` is then part of the identity.
        records_predictions: keep each sample's predicted class (``scores.extras["predicted_label"]``).
        non_identifying: constructor arguments to leave out of :meth:`hparams`, beyond :data:`NON_IDENTIFYING`.
    """

    method: ClassVar[str] = "collector"
    score_meaning: ClassVar[MeaningDeclaration] = ScoreMeaning.DIFFICULTY
    """What higher scores mean (``Scores.meaning``); every collector of the library declares its own."""
    records_predictions: ClassVar[bool] = False
    """Whether the collector also keeps each sample's predicted class (the argmax of its logits in the
    last epoch it collected), as ``scores.extras["predicted_label"]``: the label the training itself
    assigns, which :func:`~lightning_prune.mislabelled` lists next to the given one. One int32 per sample,
    written like the declared state (no host synchronisation, exchanged across ranks, checkpointed)."""
    needs_features: ClassVar[bool] = False
    non_identifying: ClassVar[frozenset[str]] = frozenset()
    _declared_spec: dict[str, PerSample] | None

    def __init__(
        self,
        *,
        adapter: BatchAdapter | None = None,
        num_samples: int | None = None,
        save_path: str | None = None,
        feature_layer: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if num_samples is not None and (not is_integer(num_samples) or num_samples < 1):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        self.adapter = adapter or default_adapter
        self.num_samples = None if num_samples is None else int(num_samples)
        self.save_path = save_path
        self.feature_layer = feature_layer
        self.name = name
        self._reset()

    @override
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _identity_checked(init)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ identity
    @classmethod
    def identifying_arguments(cls) -> tuple[str, ...]:
        """The constructor arguments that make up :meth:`hparams`, in signature order.

        The parameters of the class's ``__init__`` and, as long as it takes ``**kwargs``, of the
        ``__init__``s further up that they reach; minus :data:`NON_IDENTIFYING`, ``non_identifying``
        and (for collectors without ``needs_features``) ``feature_layer``.
        """
        if cls not in _IDENTIFYING:
            _IDENTIFYING[cls] = cls._signature_arguments()
        return _IDENTIFYING[cls]

    @classmethod
    def _signature_arguments(cls) -> tuple[str, ...]:
        excluded = NON_IDENTIFYING | cls.non_identifying | (frozenset() if cls.needs_features else {"feature_layer"})
        names: list[str] = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or not issubclass(klass, ScoreCollector):
                continue
            parameters = list(inspect.signature(init).parameters.values())[1:]  # drop self
            for parameter in parameters:
                if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                    continue
                if parameter.name not in excluded and parameter.name not in names:
                    names.append(parameter.name)
            if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
                break  # no **kwargs: the arguments further up are not the user's to set
        return tuple(names)

    def hparams(self) -> dict[str, Any]:
        """The collector's identity: its identifying constructor arguments, as plain JSON values.

        Recorded in score files, part of the :attr:`state_key` (so in checkpoints) and compared when
        a pipeline reuses a score file. Derived from :meth:`identifying_arguments`, each read from the
        attribute of its name: do not write it by hand.
        """
        owner = type(self).__name__
        return {name: plain(getattr(self, name), owner, name) for name in self.identifying_arguments()}

    def _check_identity(self) -> None:
        """Every identifying argument is stored under its name, as plain data; a hand-written
        ``hparams()`` (allowed for old subclasses) must agree with the derived one."""
        owner = type(self).__name__
        missing = [name for name in self.identifying_arguments() if not hasattr(self, name)]
        if missing:
            raise TypeError(
                f"{owner}.__init__ takes {', '.join(map(repr, missing))} but stores no attribute of that name. A "
                "collector's identity (hparams(), the state key) is read from self.<argument>: store each "
                f"argument under its own name (self.{missing[0]} = {missing[0]}), or list it in `non_identifying` "
                "if it does not change the scores."
            )
        derived = ScoreCollector.hparams(self)
        if type(self).hparams is not ScoreCollector.hparams:
            written = plain(self.hparams(), owner, "hparams()")
            if written != derived:
                raise TypeError(
                    f"{owner}.hparams() returns {written}, but its constructor's arguments say {derived}. The base "
                    "derives hparams() from the constructor: remove the override (leave an argument out with "
                    "`non_identifying`)."
                )

    # ------------------------------------------------------------------ the public contract
    def state_spec(self) -> Mapping[str, PerSample]:
        """The per-sample state the method keeps, by name (see :class:`~lightning_prune.PerSample`).

        Each state with a ``reduce`` receives, every collected epoch, the values :meth:`batch_values`
        returns under its name; the base writes, exchanges and merges them. States with
        ``reduce=None`` are written by :meth:`fold` only.
        """
        return {}

    def collects(self, epoch: int) -> bool:
        """Whether the batches of ``epoch`` (counted from 0) are recorded; all epochs by default."""
        return True

    def needs(self) -> EpochNeed | None:
        """How long a run the method needs (:class:`EpochNeed`), or ``None`` when any run of one
        epoch will do. The base refuses, when fit starts, a ``max_epochs`` or ``max_steps`` that stops
        earlier, and ``.scores`` before ``to_score`` epochs were collected."""
        return None

    def batch_values(self, view: BatchView) -> Mapping[str, Tensor]:
        """One batch's values ``{name: Tensor[B, *shape]}`` for every state of :meth:`state_spec` that
        has a ``reduce``. It may read :attr:`state` (a ``"last"`` state still holds the previous
        epoch's values for the samples not yet seen in this epoch); ``view.epoch`` is the epoch."""
        raise NotImplementedError(
            f"{type(self).__name__} declares state {sorted(self.state_spec())} but does not implement batch_values(view)."
        )

    def fold(self, epoch: int, values: Mapping[str, Tensor], state: dict[str, Tensor], seen: Tensor) -> None:
        """Optional: update state of your own once ``epoch`` has ended (identical on every rank).

        ``values`` are the epoch's rows of the reduced states (valid where ``seen``), ``state`` every
        declared tensor (already merged) plus ``labels`` and ``times_seen``. Write in place.
        :attr:`epochs_collected` counts the epochs folded before this one.
        """

    def score(self, state: Mapping[str, Tensor]) -> Tensor:
        """The final scores, one per sample, higher = keep, from the declared ``state`` (plus
        ``state["labels"]`` and ``state["times_seen"]``, the number of epochs each sample was seen in)."""
        raise NotImplementedError(f"{type(self).__name__} declares state but does not implement score(state).")

    def extras(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Optional per-sample arrays stored next to the scores (``Scores.extras``); read right after
        :meth:`score` on the same state."""
        return {}

    @property
    def records_at_train_end(self) -> bool:
        """Whether the collector records nothing while training epochs run and everything once training
        ends (an eval pass after training): a checkpoint written during training then holds none of
        its state, and a resume misses nothing."""
        return False

    @property
    def state(self) -> Mapping[str, Tensor]:
        """The declared per-sample state, by name, plus ``labels`` and ``times_seen`` (read-only use:
        :meth:`fold` receives the same tensors to write)."""
        if not self._buffers:
            raise RuntimeError(f"{type(self).__name__} has no state yet: no batch has been recorded.")
        return self._declared_state()

    # ------------------------------------------------------------------ engine
    def _spec(self) -> Mapping[str, PerSample]:
        """``state_spec()``, read once per fit: the batch hook must not rebuild it for every batch."""
        if self._declared_spec is None:
            spec = dict(self.state_spec())
            if self.records_predictions:
                if PREDICTED_LABEL in spec:
                    raise ValueError(
                        f"{type(self).__name__}.state_spec() declares {PREDICTED_LABEL!r}, the state the base keeps for "
                        "records_predictions = True; choose another name."
                    )
                spec[PREDICTED_LABEL] = PerSample(reduce="last", dtype=torch.int32, fill=-1)
            self._declared_spec = spec
        return self._declared_spec

    def _declared_state(self) -> dict[str, Tensor]:
        names = [*self._spec(), "labels", "times_seen"]
        return {name: self._buffers[name] for name in names}

    def _dims(self, num_classes: int, num_features: int | None) -> dict[str, int]:
        dims = {CLASSES: num_classes}
        if num_features is not None:
            dims[FEATURES] = num_features
        return dims

    def _allocate(self, num_samples: int, dims: Mapping[str, int], device: torch.device) -> dict[str, Tensor]:
        spec = self._spec()
        if not spec:
            raise NotImplementedError(
                f"{type(self).__name__} keeps no state: declare it with state_spec() (see lightning_prune.PerSample)."
            )
        return allocate_declared(spec, num_samples, dims, device)

    def _collect(self, view: BatchView, fresh: Tensor) -> None:
        """Record one batch; rows are written so that repeated samples keep their first value."""
        spec = self._spec()
        values = self.batch_values(view)
        if self.records_predictions:
            values = {**values, PREDICTED_LABEL: view.logits.argmax(dim=1)}
        for name in self._reduced_names():
            if name not in values:
                raise KeyError(
                    f"{type(self).__name__}.batch_values() returned {sorted(values)}; it must return {name!r}."
                )
            row, value = epoch_row(spec, self._buffers, name), values[name]
            if tuple(value.shape) != (view.indices.shape[0], *row.shape[1:]):
                raise ValueError(
                    f"{type(self).__name__}.batch_values() returned {name!r} of shape {tuple(value.shape)} for a batch "
                    f"of {view.indices.shape[0]}; the state declares [batch, *{tuple(row.shape[1:])}]."
                )
            self._write(row, view.indices, value, fresh)

    def _reduced_names(self) -> list[str]:
        return [name for name, declared in self._spec().items() if declared.reduce is not None]

    def _epoch_rows(self) -> list[Tensor]:
        """The per-sample tensors (first dimension N) that :meth:`_collect` wrote this epoch."""
        spec = self._spec()
        return [epoch_row(spec, self._buffers, name) for name in self._reduced_names()]

    def _fold(self, epoch: int, seen: Tensor) -> None:
        """Fold a finished epoch (identical on every rank) into the running state."""
        spec = self._spec()
        merge_epoch(spec, self._buffers, seen, first_time=seen & (self._buffers["times_seen"] == 1))
        values = {name: epoch_row(spec, self._buffers, name) for name in self._reduced_names()}
        self.fold(epoch, values, self._declared_state(), seen)

    def _to_score(self) -> int:
        need = self.needs()
        return 1 if need is None else need.to_score

    def _check_fit(self, trainer: pl.Trainer) -> None:
        """Fail before training if ``max_epochs`` stops the run before the method's need."""
        need, max_epochs = self.needs(), trainer.max_epochs
        if need is not None and max_epochs is not None and 0 <= max_epochs < need.epochs:
            raise ValueError(
                f"{type(self).__name__}({need.setting}) {need.requirement} but the Trainer stops after "
                f"max_epochs={max_epochs}. Raise max_epochs or lower {need.setting.split('=')[0]}."
            )

    def _check_steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fail before training if ``max_steps`` ends the run before the method's need.

        Needs the epoch length, known once the train dataloader is set up (``on_train_start``). Skipped
        where it cannot be known up front: an unsized loader, manual optimisation, or a callback that
        changes the epoch length (e.g. InfoBatch)."""
        need, max_steps = self.needs(), trainer.max_steps
        if need is None or max_steps is None or max_steps < 0:
            return
        batches = trainer.num_training_batches
        if not math.isfinite(batches) or batches < 1 or not pl_module.automatic_optimization:
            return
        if changes_epoch_length(trainer):
            return
        steps_per_epoch = math.ceil(int(batches) / max(1, int(trainer.accumulate_grad_batches)))
        reached = math.ceil(max_steps / steps_per_epoch)
        if reached < need.epochs:
            raise ValueError(
                f"{type(self).__name__}({need.setting}) {need.requirement} but max_steps={max_steps} ends the run "
                f"after {reached} epoch(s) of {steps_per_epoch} optimizer steps. Raise max_steps to at least "
                f"{need.epochs * steps_per_epoch} (or leave max_steps=-1 and set max_epochs), or lower "
                f"{need.setting.split('=')[0]}."
            )

    def _check_resumed_size(self, trainer: pl.Trainer) -> None:
        """A state resumed from a checkpoint must be of this fit's training set."""
        if not self._buffers or self._num_samples_seen is None:
            return
        try:
            size = self._infer_num_samples(trainer)
        except ValueError:
            return  # no size to compare; batches outside the state's range are still refused
        if size != self._num_samples_seen:
            raise ValueError(
                f"{type(self).__name__} resumes a checkpoint collected over {self._num_samples_seen} samples, but this "
                f"fit's training set has {size}. Its scores would mix two data sets: resume on the data set the "
                "checkpoint was made with, or fit without ckpt_path to start collecting from scratch."
            )

    # ------------------------------------------------------------------ public surface
    @property
    @override
    def state_key(self) -> str:
        key = {**self.hparams()}
        if self.name is not None:
            key["name"] = self.name
        return self._generate_state_key(**key)

    @property
    def epochs_collected(self) -> int:
        return self._epochs_collected

    @property
    def scores(self) -> Scores:
        """The scores collected so far, as :class:`~lightning_prune.Scores` (identical on every rank)."""
        if not self._buffers:
            raise RuntimeError(
                f"{type(self).__name__} has no scores yet: add it to Trainer(callbacks=[...]) and run trainer.fit()."
            )
        need = self.needs()
        to_score, describe = (1, "one full epoch") if need is None else (need.to_score, need.describe)
        if self._epochs_collected < to_score:
            raise RuntimeError(
                f"{type(self).__name__} collected {self._epochs_collected} epoch(s) but needs at least "
                f"{to_score} to score ({describe}). Train for more epochs."
            )
        times_seen = self._buffers["times_seen"]
        never_seen = int((times_seen == 0).sum())
        if never_seen:
            raise RuntimeError(
                f"{type(self).__name__}: {never_seen} of {self._num_samples_seen} samples were never seen in a training "
                "batch, so they have no score. Train on full epochs (no limit_train_batches) over the whole data set."
            )
        state = self._declared_state()
        values = self.score(state).detach().double().cpu().numpy()
        extras = {key: value.detach().cpu().numpy() for key, value in self.extras(state).items()}
        if self.records_predictions:
            extras[PREDICTED_LABEL] = state[PREDICTED_LABEL].cpu().numpy()
        labels = self._buffers["labels"].cpu().numpy()
        hparams = self.hparams()
        meaning = meaning_of(type(self), hparams)
        return Scores(values=values, method=self.method, hparams=hparams, labels=labels, extras=extras, meaning=meaning)

    @property
    def _state_num_samples(self) -> int:
        """N of the collected state; known once the first batch (or a checkpoint) has set the state up."""
        if self._num_samples_seen is None:
            raise RuntimeError(f"{type(self).__name__} has no state yet: no batch has been recorded.")
        return self._num_samples_seen

    @property
    def _state_num_classes(self) -> int:
        """C of the collected state; known once the first batch (or a checkpoint) has set the state up."""
        if self._num_classes is None:
            raise RuntimeError(f"{type(self).__name__} has no state yet: no batch has been recorded.")
        return self._num_classes

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._buffers: dict[str, Tensor] = {}
        self._num_samples_seen: int | None = None
        self._num_classes: int | None = None
        self._num_features: int | None = None
        self._epochs_collected = 0
        self._pending_epoch: int | None = None
        self._loaded_this_fit = False
        self._hook_handle: Any = None
        self._features: Tensor | None = None
        self._faults = BatchFaults()
        self._declared_spec = None

    @override
    def state_dict(self) -> dict[str, Any]:
        if not self._buffers:
            return {}
        return {
            "format_version": STATE_FORMAT_VERSION,
            "method": self.method,
            "hparams": self.hparams(),
            "num_samples": self._num_samples_seen,
            "num_classes": self._num_classes,
            "num_features": self._num_features,
            "epochs_collected": self._epochs_collected,
            "pending_epoch": self._pending_epoch,
            "buffers": {key: value.detach().cpu().clone() for key, value in self._buffers.items()},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if state_dict.get("method") != self.method or state_dict.get("hparams") != self.hparams():
            raise ValueError(
                f"Cannot resume {type(self).__name__}({self.hparams()}) from a checkpoint written by "
                f"{state_dict.get('method')}({state_dict.get('hparams')}): create the collector with the "
                "checkpoint's settings to resume it."
            )
        num_features = state_dict.get("num_features", self._checkpoint_feature_width(state_dict))
        self._check_buffer_layout(state_dict, num_features)
        self._buffers = {key: value.clone() for key, value in state_dict["buffers"].items()}
        self._num_samples_seen = state_dict["num_samples"]
        self._num_classes = state_dict["num_classes"]
        self._num_features = num_features
        self._epochs_collected = state_dict["epochs_collected"]
        self._pending_epoch = state_dict["pending_epoch"]
        self._loaded_this_fit = True

    def _checkpoint_feature_width(self, state_dict: Mapping[str, Any]) -> int | None:
        """H of a checkpoint written before it was recorded: the width of its feature-sized buffer."""
        for name, declared in self._spec().items():
            buffer = (state_dict.get("buffers") or {}).get(name)
            if declared.uses_features and buffer is not None:
                return int(buffer.shape[1 + declared.shape.index(FEATURES)])
        return None

    def _check_buffer_layout(self, state_dict: Mapping[str, Any], num_features: int | None) -> None:
        """Refuse checkpointed buffers this version would lay out differently (names, shapes, dtypes),
        e.g. a checkpoint written by another lightning-prune version: resuming would fail later or
        mix layouts."""
        n, c = int(state_dict["num_samples"]), int(state_dict["num_classes"])
        base = {"labels": torch.int64, "seen": torch.bool, "times_seen": torch.int32}
        expected = {name: (torch.Size([n]), dtype) for name, dtype in base.items()}
        if num_features is not None or not any(declared.uses_features for declared in self._spec().values()):
            allocated = self._allocate(n, self._dims(c, num_features), torch.device("meta"))
            expected.update({name: (t.shape, t.dtype) for name, t in allocated.items()})
        found = {name: (t.shape, t.dtype) for name, t in state_dict["buffers"].items()}
        if found != expected:
            differing = sorted(name for name in set(found) | set(expected) if found.get(name) != expected.get(name))
            raise ValueError(
                f"Cannot resume {type(self).__name__}: the checkpoint's state {differing} does not match what this "
                f"version of lightning-prune keeps (checkpoint: {[found.get(k) for k in differing]}; expected: "
                f"{[expected.get(k) for k in differing]}). Resume with the version that wrote the checkpoint, or start "
                "the fit from scratch."
            )

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse a resume that would silently lose or skip collector state.

        Lightning restores a callback's state only under its exact ``state_key`` and skips the rest
        with a warning, so a collector resumed with other settings, another ``name`` or precision would
        score from the remaining epochs alone. Fail instead, naming both sides.
        """
        states: Mapping[str, Any] = checkpoint.get("callbacks") or {}
        present = {callback.state_key: callback for callback in trainer_callbacks(trainer)}
        orphans = [key for key, state in states.items() if _is_collector_state(state) and key not in present]
        collectors = [key for key, callback in present.items() if isinstance(callback, ScoreCollector)]
        if orphans:
            raise ValueError(
                f"The checkpoint holds state of {', '.join(map(str, orphans))} that no collector of this fit claims "
                f"(this fit's collectors: {', '.join(collectors) or 'none'}). Resuming would drop the scores collected "
                "so far. Create the collectors with the checkpoint's settings, name and precision, or fit without "
                "ckpt_path to start collecting from scratch."
            )
        completed = checkpoint_completed_epochs(checkpoint)
        missed = [] if self.records_at_train_end else [epoch for epoch in range(completed) if self.collects(epoch)]
        if self.state_key not in states and int(checkpoint.get("global_step", 0)) > 0 and missed:
            raise ValueError(
                f"{self.state_key} has no state in the checkpoint, which resumes at epoch {completed}; it would miss "
                f"epoch(s) {missed[0]}..{missed[-1]} and score from the remaining epochs only. The checkpoint's "
                f"collectors: {', '.join(k for k, s in states.items() if _is_collector_state(s)) or 'none'}. Add this "
                "collector to a fit that starts from scratch instead."
            )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        resumed, self._loaded_this_fit = self._loaded_this_fit, False  # a crashed fit must not leave it set
        check_unique_state_keys(trainer_callbacks(trainer))
        if self._buffers and not resumed:
            rank_zero_warn(
                f"{type(self).__name__} already holds scores from an earlier fit ({self._epochs_collected} "
                "epochs); this fit() starts collecting from scratch and replaces them. Save `.scores` before "
                "fitting again, or use a new collector."
            )
            self._reset()
        self._check_fit(trainer)
        if self.needs_features:
            layer = _find_final_linear(pl_module, self.feature_layer)
            self._hook_handle = layer.register_forward_hook(self._capture_features)

    def _capture_features(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if module.training:
            self._features = inputs[0].detach()

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_streaming_split(getattr(trainer.train_dataloader, "dataset", None), trainer, type(self).__name__)
        self._check_steps(trainer, pl_module)
        self._check_resumed_size(trainer)
        if self._buffers:
            self._buffers = {key: value.to(pl_module.device) for key, value in self._buffers.items()}
        self._faults = BatchFaults()

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        epoch = trainer.current_epoch
        if self._pending_epoch is not None and self._pending_epoch != epoch:
            self._finish_epoch(trainer, self._pending_epoch)
        if not self.collects(epoch):
            return
        view = self.adapter(outputs, batch, pl_module)
        if view.features is None and self.needs_features:
            view.features = self._features
        self._record(trainer, pl_module, view, epoch)
        if batch_idx + 1 >= trainer.num_training_batches:
            # fold before validation and checkpointing, which run before on_train_epoch_end
            self._finish_epoch(trainer, epoch)

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, view: BatchView, epoch: int) -> None:
        """Write one batch's rows as part of ``epoch``; shared by the training hook and eval passes."""
        device = pl_module.device
        view.logits = view.logits.detach()
        view.indices = view.indices.to(device, non_blocking=True)
        view.targets = view.targets.to(device, non_blocking=True)
        view.epoch = epoch
        if self._pending_epoch != epoch:
            if not self._buffers:
                self._allocate_state(trainer, view)
            self._check_batch(trainer, view)  # once per epoch: the only host synchronisation here
            self._pending_epoch = epoch
        valid = self._faults.screen(view, self._state_num_samples, self._state_num_classes)
        seen = self._buffers["seen"]
        fresh = ~seen[view.indices] & valid
        self._write(self._buffers["labels"], view.indices, view.targets, fresh)
        self._collect(view, fresh)
        seen[view.indices] = seen[view.indices] | valid
        self._features = None

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_epoch is not None:
            self._finish_epoch(trainer, self._pending_epoch)

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """A checkpoint taken inside an epoch on several processes holds every rank's rows of that epoch.

        Until the epoch ends each rank keeps the rows of the batches it trained, and Lightning writes
        rank 0's state only, so a resume would lose the other ranks' (their samples would miss the
        epoch). Lightning dumps a checkpoint on every rank alike, so the rows are gathered here, into the
        checkpoint's copy of the state; the live state is left for the epoch's own exchange.
        """
        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if trainer.world_size <= 1 or self._pending_epoch is None or not self._buffers or not state:
            return
        buffers = {key: value.clone() for key, value in self._buffers.items()}
        spec = self._spec()
        rows = [buffers["labels"], *(epoch_row(spec, buffers, name) for name in self._reduced_names())]
        self._exchange(trainer, rows, seen=buffers["seen"])
        state["buffers"] = {key: value.detach().cpu() for key, value in buffers.items()}

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_epoch is not None:
            self._finish_epoch(trainer, self._pending_epoch)
        self._loaded_this_fit = False
        if self.save_path is not None and self._buffers and trainer.is_global_zero:
            self.scores.save(self.save_path)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._hook_handle is not None:
            self._hook_handle.remove()
            self._hook_handle = None
        self._features = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _write(buffer: Tensor, indices: Tensor, values: Tensor, fresh: Tensor) -> None:
        """``buffer[indices] = values`` for samples not yet seen this epoch, without a host sync."""
        mask = fresh.reshape(-1, *([1] * (buffer.dim() - 1)))
        buffer[indices] = torch.where(mask, values.to(buffer.dtype), buffer[indices])

    def _infer_num_samples(self, trainer: pl.Trainer) -> int:
        if self.num_samples is not None:
            return self.num_samples
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not (hasattr(dataset, "__len__") or hasattr(dataset, "full_size")):
            raise ValueError(
                f"{type(self).__name__} cannot infer the training-set size from the train dataloader "
                f"({type(loader).__name__}); pass num_samples=N."
            )
        return index_space_size(dataset)

    def _allocate_state(self, trainer: pl.Trainer, view: BatchView) -> None:
        if view.logits.dim() != 2:
            raise ValueError(
                f"{type(self).__name__} expects logits of shape [batch, classes], got {tuple(view.logits.shape)}."
            )
        num_features = None
        if any(declared.uses_features for declared in self._spec().values()):
            if view.features is None or view.features.dim() != 2:
                got = "none" if view.features is None else f"shape {tuple(view.features.shape)}"
                layer = repr(self.feature_layer) if self.feature_layer else "the model's last nn.Linear"
                fix = (
                    f"{layer} was not called in this forward pass: name the classifier layer with "
                    "feature_layer='path.to.layer'"
                    if self.needs_features
                    else "set needs_features = True (the inputs of the final linear layer)"
                )
                raise ValueError(
                    f"{type(self).__name__} needs per-sample features of shape [batch, hidden], but the batch's "
                    f"features are {got}: {fix}, or return BatchView(features=...) from an adapter."
                )
            num_features = int(view.features.shape[1])
        n = self._num_samples_seen = self._infer_num_samples(trainer)
        self._num_classes = int(view.logits.shape[1])
        self._num_features = num_features
        device = view.logits.device
        self._buffers = {
            "labels": torch.full((n,), -1, dtype=torch.int64, device=device),
            "seen": torch.zeros(n, dtype=torch.bool, device=device),
            "times_seen": torch.zeros(n, dtype=torch.int32, device=device),
            **self._allocate(n, self._dims(self._num_classes, num_features), device),
        }

    def _check_batch(self, trainer: pl.Trainer, view: BatchView) -> None:
        check_first_batch(
            type(self).__name__, view, self._state_num_samples, self._state_num_classes, trainer.current_epoch
        )

    def _finish_epoch(self, trainer: pl.Trainer, epoch: int) -> None:
        self._pending_epoch = None
        self._raise_batch_faults(trainer, epoch)
        rows = [self._buffers["labels"], *self._epoch_rows()]
        self._exchange(trainer, rows)
        seen = self._buffers["seen"]
        self._check_coverage(epoch, int(seen.sum()))
        self._buffers["times_seen"] += seen.to(torch.int32)
        self._fold(epoch, seen)
        seen.zero_()
        self._epochs_collected += 1

    def _check_coverage(self, epoch: int, covered: int) -> None:
        """Warn when an epoch did not see every sample (their state keeps its previous values)."""
        if covered < self._state_num_samples:
            rank_zero_warn(
                f"{type(self).__name__}: epoch {epoch} covered {covered} of {self._num_samples_seen} samples; "
                "samples not seen keep their previous values. Train on full epochs for exact scores."
            )

    @staticmethod
    def _gather(trainer: pl.Trainer) -> GatherFn:
        """The collective for the epoch's exchange: ``torch.distributed.all_gather`` where a process group
        is up (``Strategy.all_gather`` goes through a deprecated torch autograd function and warns on every
        rank), else the strategy's own."""
        return all_gather if distributed_ready() else trainer.strategy.all_gather

    def _raise_batch_faults(self, trainer: pl.Trainer, epoch: int) -> None:
        """Raise, on every rank at once, what this epoch's batch screening found."""
        self._faults.raise_if_any(
            type(self).__name__,
            epoch,
            self._state_num_samples,
            self._state_num_classes,
            device=self._buffers["seen"].device,
            gather=self._gather(trainer) if trainer.world_size > 1 else None,
        )

    def _exchange(self, trainer: pl.Trainer, rows: list[Tensor], seen: Tensor | None = None) -> None:
        """Give every rank the rows every rank wrote this epoch (first occurrence in rank order wins);
        ``seen`` (default: the live state's) marks this rank's rows and ends marking every rank's."""
        if trainer.world_size <= 1:
            return
        seen = self._buffers["seen"] if seen is None else seen
        local = seen.nonzero().reshape(-1)
        gathered = RankRows(self._gather(trainer), local)
        keep_index, source = first_occurrence(gathered.indices)
        for tensor in rows:  # one gathered tensor at a time: the transient is the largest row, not their sum
            tensor[keep_index] = gathered.gather(tensor[local])[source].to(tensor.dtype)
        seen[keep_index] = True
