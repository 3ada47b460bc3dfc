"""The score -> select -> train -> report pipeline behind ``lightning-prune run``."""

from lightning_prune.pipeline.context import MethodSpec, RunContext
from lightning_prune.pipeline.runner import PruningRun

__all__ = ["MethodSpec", "PruningRun", "RunContext"]
