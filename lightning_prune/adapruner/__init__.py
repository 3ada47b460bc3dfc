"""AdaPruner: a LightningModule that learns a per-sample keep-mask jointly with the model."""

from lightning_prune.adapruner.module import AdaPruner, cross_entropy_per_sample

__all__ = ["AdaPruner", "cross_entropy_per_sample"]
