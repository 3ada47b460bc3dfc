"""How the pipeline names what it writes: the two baselines and the pruning ratios in file names
and report keys. Shared by the runner and the report, which must agree on them."""

from __future__ import annotations

FULL = "full"
"""The full-data reference training (no pruning)."""
RANDOM = "random"
"""The random-pruning baseline, run at every ratio of the run."""


def ratio_label(ratio: float) -> str:
    """``0.5 -> "0.50"``, ``0.995 -> "0.995"``: two decimals unless the ratio needs more, so no two
    ratios share a file name or a report key."""
    return f"{ratio:.2f}" if round(ratio, 2) == ratio else f"{ratio:g}"


def ratio_tag(ratio: float) -> str:
    return f"r{ratio_label(ratio)}"
