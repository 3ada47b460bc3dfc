"""Trainer settings of a run: which of them define the run, and building the ones given by class path.

A run's YAML gives Trainer arguments the way LightningCLI takes them (callbacks, loggers and
plugins as ``{class_path, init_args}``); display-only ones are left out of the run's identity so
that turning on a progress bar never blocks a resume.
"""

from __future__ import annotations

import importlib
from typing import Any

DISPLAY_ONLY_TRAINER_ARGS = frozenset(
    {"enable_progress_bar", "enable_model_summary", "logger", "log_every_n_steps", "default_root_dir", "profiler"}
)
"""Trainer settings that change what is shown or logged, not what is trained: not part of a run's identity."""
INSTANTIATED_TRAINER_ARGS = ("callbacks", "logger", "plugins", "profiler")
"""Trainer settings whose ``class_path`` specs are built into objects, anew for every Trainer."""


def identity_trainer_args(trainer_args: dict[str, Any]) -> dict[str, Any]:
    """The trainer settings that define what is trained (the display-only ones left out)."""
    return {key: value for key, value in trainer_args.items() if key not in DISPLAY_ONLY_TRAINER_ARGS}


def instantiate(value: Any) -> Any:
    """Build ``{"class_path": ..., "init_args": {...}}`` specs (recursively, in lists too) into objects.

    Lets a run YAML give Trainer callbacks, loggers and plugins the way LightningCLI takes them.
    """
    if hasattr(value, "as_dict"):  # jsonargparse parses nested class_path dicts into Namespaces
        value = value.as_dict()
    if isinstance(value, list):
        return [instantiate(item) for item in value]
    if isinstance(value, dict) and "class_path" in value:
        module_name, _, class_name = str(value["class_path"]).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(f"class_path {value['class_path']!r} names no importable class ({error}).") from None
        return cls(**{key: instantiate(arg) for key, arg in (value.get("init_args") or {}).items()})
    return value
