"""How the pipeline names what it writes: the two baselines, the pruning ratios, method labels and cost
records in file names and report keys. Each name is spelled here once; the runner, the methods and the
report use these functions, so they cannot disagree."""

from __future__ import annotations

import re

FULL = "full"
"""The full-data reference training (no pruning)."""
RANDOM = "random"
"""The random-pruning baseline, run at every ratio of the run."""
FULL_BUDGET = "full-budget"
"""The equal-cost baseline: the full data trained for the optimiser steps of each ratio's coreset training."""
RS2 = "rs2"
"""The dynamic random baseline (RS2): a fresh random subset of each ratio's size every epoch."""
BASELINES = (FULL, RANDOM, FULL_BUDGET, RS2)
TARGET_SAVING = "target_saving"
"""A dynamic cell's ``ratio_is`` when its ratio was a target saving (not the method's native ratio)."""
"""The rows every run adds itself (method labels may not take these names)."""


def ratio_label(ratio: float) -> str:
    """``0.5 -> "0.50"``, ``0.995 -> "0.995"``: two decimals unless the ratio needs more, so no two
    ratios share a file name or a report key."""
    return f"{ratio:.2f}" if round(ratio, 2) == ratio else f"{ratio:g}"


def ratio_tag(ratio: float) -> str:
    return f"r{ratio_label(ratio)}"


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A method label: it names files of the run (``cells/LABEL-rR-sS.json``), so it must be a plain file name."""


def check_label(label: str) -> str:
    """Refuse a label that is not a plain file name (a path, an empty or hidden name, spaces)."""
    if not isinstance(label, str) or not PLAIN_NAME.fullmatch(label):
        raise ValueError(
            f"Method label {label!r} is not a plain name: labels name the run's files, so they may hold only "
            "letters, digits and '.', '_', '-', and must start with a letter or digit (e.g. `label: tdds-ccs`)."
        )
    return label


def scoring_cost_name(key: str) -> str:
    """The recorded cost (``RUN/costs/NAME.json``) of the scoring run that served method ``key``."""
    return f"score-{key}"


def selection_cost_name(key: str, ratio: float | None = None) -> str:
    """The recorded cost of what method ``key`` trained or computed to select: at ``ratio`` (a mask training,
    validation's candidate trainings), or once for every ratio (``None``: influence's inference pass)."""
    return f"select-{key}" if ratio is None else f"select-{key}-{ratio_tag(ratio)}"


def scoring_checkpoint_name(epochs: int) -> str:
    """The checkpoint folder of the ``epochs``-epoch scoring run (``RUN/checkpoints/NAME``)."""
    return f"scoring-{epochs}ep"
