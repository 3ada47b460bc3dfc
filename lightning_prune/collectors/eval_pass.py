"""Reading a collector's inputs from a separate inference pass instead of the training forward pass.

Some methods are defined on predictions or features of the model *as it stands* after an epoch (or
after training), computed without gradients, in eval mode (batch-norm running statistics, no
dropout), and ideally without augmentation: dynamic uncertainty's official code, and the
feature-space selectors. :class:`EvalPassMixin` gives a :class:`ScoreCollector` that option
(``source="eval_pass"``) while keeping everything else of the base: rows are written with
the base's recording path exactly as training batches are, and the epoch is folded the same way,
so the rank exchange, resume and error checks are shared.

When the pass runs (the class attribute ``eval_schedule``):

* ``eval_schedule = "epoch"``: after the last training batch of every collected epoch (after its
  optimiser step, before validation and checkpointing, so an end-of-epoch checkpoint includes it);
* ``eval_schedule = "end"``: once, in ``on_train_end`` (before Lightning tears the strategy down
  and moves the model to the CPU), also when training stops early.

What it iterates:

* ``dataloader=None``: the trainer's own train dataloader, in eval mode. It carries the training
  augmentation; under DDP Lightning has already given it a ``DistributedSampler``, so each rank
  runs its shard.
* ``dataloader=loader``: e.g. the training set with the test-time transform, unshuffled (the
  official setting). Its batches must be ``(x, y, index)`` like the training batches. Under DDP a
  loader without a ``DistributedSampler`` is rebuilt with one (same dataset, batch size, workers,
  collate function), so every rank runs ``1/world_size`` of it and the base exchange merges them.

The logits are ``pl_module(inputs)``; features, when the method needs them, are the inputs of the
final linear layer (or ``feature_layer``), captured by a hook that lives only for the pass. A custom
``adapter`` is called as ``adapter(None, batch, pl_module)`` (there is no ``training_step`` output).
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset
from typing_extensions import override

from lightning_prune.collectors.base import BatchView, ScoreCollector, _find_final_linear, default_adapter
from lightning_prune.data.indexed import unpack_batch
from lightning_prune.data.pruned import loader_settings

SOURCES = ("train", "eval_pass")


class EvalPassMixin(ScoreCollector):
    """Adds ``source="train" | "eval_pass"`` to a :class:`ScoreCollector` subclass (listed first in
    the bases). Subclasses set ``eval_schedule`` (``"epoch"`` or ``"end"``) and call
    :meth:`_set_source` in ``__init__``.

    It derives from :class:`ScoreCollector` so that its calls into the collector are type-checked;
    listing ``ScoreCollector`` after it in a subclass's bases keeps the same method order.
    """

    eval_schedule: ClassVar[str] = "epoch"
    """When the eval pass runs: ``"epoch"`` after every collected epoch, ``"end"`` once training ends."""

    def _set_source(self, source: str, dataloader: DataLoader | None) -> None:
        name = type(self).__name__
        if source not in SOURCES:
            raise ValueError(f"{name} source must be one of {SOURCES}, got {source!r}.")
        if dataloader is not None and source != "eval_pass":
            raise ValueError(
                f"{name}: dataloader= is only read by the eval pass; pass source='eval_pass' with it, or drop it."
            )
        if dataloader is not None and not isinstance(dataloader, DataLoader):
            raise TypeError(
                f"{name}: dataloader must be a torch.utils.data.DataLoader yielding (x, y, index) batches, "
                f"got {type(dataloader).__name__}."
            )
        self.source = source
        self.dataloader = dataloader
        self._eval_pass_epoch: int | None = None

    # ------------------------------------------------------------------ hooks
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self._eval_pass_epoch = None

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.source == "train":
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if self.eval_schedule == "epoch" and batch_idx + 1 >= trainer.num_training_batches:
            self._maybe_run_eval_pass(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a fallback for loaders whose length is unknown, where the last batch cannot be recognised
        if self.source == "eval_pass" and self.eval_schedule == "epoch":
            self._maybe_run_eval_pass(trainer, pl_module)
        super().on_train_epoch_end(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.source == "eval_pass" and self.eval_schedule == "end":
            self._maybe_run_eval_pass(trainer, pl_module)
        super().on_train_end(trainer, pl_module)

    @property
    @override
    def records_at_train_end(self) -> bool:
        return self.source == "eval_pass" and self.eval_schedule == "end"  # after every checkpoint

    # ------------------------------------------------------------------ the pass
    def _maybe_run_eval_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self._eval_pass_epoch == epoch or not self.collects(epoch):
            return
        self._eval_pass_epoch = epoch
        self._run_eval_pass(trainer, pl_module, epoch)

    def _eval_loader(self, trainer: pl.Trainer) -> DataLoader:
        name = type(self).__name__
        loader = self.dataloader if self.dataloader is not None else trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            raise TypeError(
                f"{name}(source='eval_pass') iterates the train dataloader, but the trainer has "
                f"{type(loader).__name__} (several loaders?). Pass dataloader=DataLoader(...) to the collector."
            )
        if self.dataloader is None or trainer.world_size <= 1 or isinstance(loader.sampler, DistributedSampler):
            return loader
        if isinstance(loader.dataset, IterableDataset) or loader.batch_size is None:
            raise ValueError(
                f"{name}: under DDP the eval-pass dataloader is sharded with a DistributedSampler, which needs a "
                "map-style dataset and a batch_size; give the loader both, or a DistributedSampler of your own."
            )
        sampler: DistributedSampler[int] = DistributedSampler(
            loader.dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, **loader_settings(loader))

    def _run_eval_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        captured: dict[str, Tensor] = {}
        handle = None
        if self.needs_features:
            layer = _find_final_linear(pl_module, self.feature_layer)

            def capture(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
                captured["features"] = inputs[0].detach()

            handle = layer.register_forward_hook(capture)
        # restore each module's own mode afterwards: a user may keep some layers frozen in eval mode
        modes = [(module, module.training) for module in pl_module.modules()]
        pl_module.eval()
        try:
            with torch.no_grad():
                for batch in self._eval_loader(trainer):
                    batch = trainer.strategy.batch_to_device(batch)
                    captured.clear()
                    view = self._eval_view(batch, pl_module)
                    if view.features is None:
                        view.features = captured.get("features")
                    self._record(trainer, pl_module, view, epoch)
        finally:
            for module, training in modes:
                module.training = training
            if handle is not None:
                handle.remove()
        if self._pending_epoch is None:
            raise ValueError(
                f"{type(self).__name__}: the eval-pass dataloader yielded no batches in epoch {epoch}; pass a "
                "dataloader over the training set."
            )
        self._finish_epoch(trainer, epoch)

    def _eval_view(self, batch: Any, pl_module: pl.LightningModule) -> BatchView:
        if self.adapter is not default_adapter:
            return self.adapter(None, batch, pl_module)
        inputs, targets, indices = unpack_batch(batch)
        return BatchView(logits=pl_module(inputs), targets=targets, indices=indices)
