"""Dynamic data pruning: which samples each epoch trains on, decided inside the fit (InfoBatch)."""

from lightning_prune.dynamic.infobatch import EpochPlan, InfoBatch, infobatch_plan
from lightning_prune.dynamic.loader import DynamicDataModule, DynamicSampler, WeightedItems

__all__ = ["DynamicDataModule", "DynamicSampler", "EpochPlan", "InfoBatch", "WeightedItems", "infobatch_plan"]
