"""``WrappedDataModule``: a data module that serves another one's data with its own training loader.

:class:`~lightning_prune.PrunedDataModule` (a static selection) and
:class:`~lightning_prune.DynamicDataModule` (a per-epoch selection) both wrap the user's data
module, rebuild only its training loader, and must otherwise behave exactly like it: validation,
test and prediction loaders, batch-transfer hooks, ``setup``/``teardown``, checkpointed state and
any attribute user code reads from ``trainer.datamodule``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader

_FORWARDED_HOOKS = (
    "val_dataloader",
    "test_dataloader",
    "predict_dataloader",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
)


class WrappedDataModule(pl.LightningDataModule):
    """Everything of ``datamodule`` but the training loader, which subclasses build in :meth:`train_dataloader`."""

    def __init__(self, datamodule: pl.LightningDataModule) -> None:
        super().__init__()
        if not isinstance(datamodule, pl.LightningDataModule):
            raise TypeError(
                f"{type(self).__name__} wraps a LightningDataModule, got {type(datamodule).__name__}. Wrap plain "
                "datasets first, e.g. LightningDataModule.from_datasets(train_dataset, val_dataset, batch_size=...)."
            )
        self.datamodule = datamodule
        self.prepare_data_per_node = datamodule.prepare_data_per_node
        # Lightning decides whether a loop or hook exists by whether the data module overrides it, so
        # forward exactly the ones the wrapped module defines (binding them on the instance counts as
        # an override); the rest keep LightningDataModule's defaults.
        for name in _FORWARDED_HOOKS:
            if is_overridden(name, datamodule, pl.LightningDataModule):
                setattr(self, name, getattr(datamodule, name))

    def prepare_data(self) -> None:
        self.datamodule.prepare_data()

    def setup(self, stage: str) -> None:
        self.datamodule.trainer = self.trainer
        self.datamodule.setup(stage)

    def teardown(self, stage: str) -> None:
        self.datamodule.teardown(stage)

    def state_dict(self) -> dict[str, Any]:
        return self.datamodule.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.datamodule.load_state_dict(state_dict)

    def __getattr__(self, name: str) -> Any:
        # Attributes the wrapped module exposes (num_classes, input_shape, ...) stay reachable, so code
        # that reads them from trainer.datamodule keeps working.
        if name.startswith("_") or name == "datamodule":
            raise AttributeError(name)
        try:
            inner = self.__dict__["datamodule"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(inner, name)

    def wrapped_train_loader(self) -> DataLoader:
        """The wrapped module's training loader, checked to be one ``DataLoader`` this class can rebuild."""
        loader = self.datamodule.train_dataloader()
        if not isinstance(loader, DataLoader):
            raise TypeError(
                f"{type(self).__name__} needs the wrapped {type(self.datamodule).__name__}.train_dataloader() to "
                f"return one torch DataLoader, got {type(loader).__name__}."
            )
        return loader

    def world(self) -> tuple[int, int]:
        """``(num_replicas, rank)`` of the training this module serves."""
        trainer = self.trainer
        kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
        if kwargs:
            return int(kwargs["num_replicas"]), int(kwargs["rank"])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0
