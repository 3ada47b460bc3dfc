"""Training-dynamics collectors: ``lightning.pytorch.Callback``s that score every training sample."""

from lightning_prune.collectors.base import BatchView, ScoreCollector, default_adapter, recompute_logits
from lightning_prune.collectors.forgetting import Forgetting
from lightning_prune.collectors.tdds import TDDS

__all__ = ["BatchView", "Forgetting", "ScoreCollector", "TDDS", "default_adapter", "recompute_logits"]
