"""Dynamic data pruning: which samples each epoch trains on, decided inside the fit (InfoBatch, RS2, SeTa)."""

from lightning_prune.dynamic.infobatch import EpochPlan, InfoBatch, infobatch_plan
from lightning_prune.dynamic.loader import DynamicDataModule, DynamicSampler, EpochPlanner, WeightedItems
from lightning_prune.dynamic.losses import PER_SAMPLE_LOSS, weighted_outputs
from lightning_prune.dynamic.rs2 import RS2, rs2_positions
from lightning_prune.dynamic.seta import SeTa, seta_groups, seta_plan, seta_window

__all__ = [
    "RS2",
    "DynamicDataModule",
    "DynamicSampler",
    "EpochPlan",
    "EpochPlanner",
    "PER_SAMPLE_LOSS",
    "InfoBatch",
    "SeTa",
    "WeightedItems",
    "infobatch_plan",
    "rs2_positions",
    "seta_groups",
    "seta_plan",
    "seta_window",
    "weighted_outputs",
]
