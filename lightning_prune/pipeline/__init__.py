"""The score -> select -> train -> report pipeline behind ``lightning-prune run``."""

from lightning_prune.pipeline.runner import MethodSpec, PruningRun

__all__ = ["MethodSpec", "PruningRun"]
