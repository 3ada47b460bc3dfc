"""Importing an optional package, or saying which extra of lightning-prune installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {"datasets": "hf", "pyarrow": "hf", "litdata": "litdata"}
"""The extra of lightning-prune that installs each optional package (pyarrow comes with ``datasets``)."""


def missing_extra(module: str, purpose: str, error: ImportError) -> ImportError:
    """The ``ImportError`` to raise when ``module`` is missing: ``purpose`` needs it, and which extra installs it."""
    top = module.split(".")[0]
    return ImportError(
        f"{purpose} needs the optional package {top!r}, which is not installed ({error}). Install it with "
        f'pip install "lightning-prune[{EXTRAS[top]}]".'
    )


def import_optional(module: str, purpose: str) -> ModuleType:
    """``import module``, or the :func:`missing_extra` error."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise missing_extra(module, purpose, error) from error
