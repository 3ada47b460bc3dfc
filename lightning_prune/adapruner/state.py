"""AdaPruner's state beyond training: trained backbone weights in, its checkpoint entry, the Selection out.

Reading foreign checkpoints (plain ``state_dict`` or Lightning checkpoint, with the backbone's key
prefix found automatically) and assembling the :class:`~lightning_prune.Selection` with its
provenance are independent of how the mask trains, so they live apart from the LightningModule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_prune.selection.files import label_fingerprint
from lightning_prune.selection.selection import Selection

if TYPE_CHECKING:
    from lightning_prune.adapruner.module import AdaPruner

CHECKPOINT_KEY = "adapruner"
"""The entry of a Lightning checkpoint that holds AdaPruner's state outside its ``state_dict``."""

Checkpoint = str | os.PathLike[str] | Mapping[str, Any]


def load_backbone_weights(backbone: nn.Module, checkpoint: Checkpoint, prefix: str | None, strict: bool) -> None:
    """Load trained weights into ``backbone`` from a path or a loaded plain / Lightning checkpoint."""
    loaded = _read(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    state = match_prefix(extract_state_dict(loaded), backbone, prefix, strict)
    missing, _ = backbone.load_state_dict(state, strict=strict)
    if missing and not strict:
        rank_zero_warn(
            f"AdaPruner.from_pretrained_backbone: {len(missing)} backbone weights are not in the checkpoint."
        )


def _read(path: str | os.PathLike[str]) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint file.") from None
    except Exception as error:  # weights_only refuses pickled objects it does not know
        raise ValueError(
            f"{path}: could not read it as a weights-only checkpoint ({type(error).__name__}: {error}). "
            "If you trust the file, load it yourself with torch.load(path, weights_only=False) and pass "
            "the state_dict as `checkpoint`."
        ) from error


def extract_state_dict(loaded: Any) -> dict[str, Tensor]:
    """The ``state_dict`` in a loaded checkpoint: the object itself, or a Lightning checkpoint's entry."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not loaded or not all(isinstance(v, Tensor) for v in loaded.values()):
        keys = sorted(loaded)[:10] if isinstance(loaded, Mapping) else type(loaded).__name__
        raise ValueError(
            f"The checkpoint is neither a state_dict nor a Lightning checkpoint with a 'state_dict' entry "
            f"(top-level: {keys}). Pass the backbone's state_dict itself, e.g. checkpoint=saved['net']."
        )
    return dict(loaded)


def match_prefix(state: dict[str, Tensor], backbone: nn.Module, prefix: str | None, strict: bool) -> dict[str, Tensor]:
    """The entries of ``state`` that belong to ``backbone``, under the backbone's own key names."""
    wanted = set(backbone.state_dict())
    if prefix is not None:
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not stripped:
            raise ValueError(f"No checkpoint key starts with prefix {prefix!r}; keys look like {sorted(state)[:5]}.")
        return stripped
    if wanted <= set(state):
        return {k: v for k, v in state.items() if k in wanted}
    # A Lightning checkpoint stores the backbone under the attribute name it had in its module:
    # find the prefix that, stripped, yields the backbone's own keys.
    counts: dict[str, int] = {}
    for key in state:
        for cut in range(len(key)):
            if (cut == 0 or key[cut - 1] == ".") and key[cut:] in wanted:
                counts[key[:cut]] = counts.get(key[:cut], 0) + 1
    best = max(counts, key=lambda p: counts[p], default=None)
    if best is None or (strict and counts[best] < len(wanted)):
        raise ValueError(
            "The checkpoint's keys do not match the backbone's (e.g. checkpoint "
            f"{sorted(state)[:3]} vs backbone {sorted(wanted)[:3]}). Pass prefix='...' naming the part of the "
            "checkpoint keys before the backbone's own names, or strict=False."
        )
    return {k[len(best) :]: v for k, v in state.items() if k.startswith(best) and k[len(best) :] in wanted}


def check_entry(state: Mapping[str, Any], num_samples: int) -> None:
    """A checkpoint's AdaPruner entry fits a mask for ``num_samples``."""
    if state.get("num_samples") != num_samples:
        raise ValueError(
            f"This checkpoint's AdaPruner has a mask for {state.get('num_samples')} samples, this one for "
            f"{num_samples}. Build AdaPruner with num_samples={state.get('num_samples')} to resume it."
        )


def build_selection(
    pruner: AdaPruner,
    keep: np.ndarray,
    *,
    which: str,
    alpha_reached: float,
    epochs: int,
    mask_steps: int,
    best: Mapping[str, Any] | None = None,
) -> Selection:
    """The kept samples (``keep``, a bool per index) as a Selection that records how the mask was learned.

    ``epochs`` counts the training epochs started, ``best`` is the validated best mask's record
    when ``which="best"``.
    """
    indices = np.flatnonzero(keep)
    if indices.size == 0:
        raise RuntimeError(
            "The AdaPruner mask keeps no sample. Lower mask_lr, raise keep_ratio, or train longer so that "
            "the compression term can pull the kept fraction back to the target."
        )
    reached = float(keep.mean())
    hparams = {
        "keep_ratio": pruner.keep_ratio,
        "keep_ratio_reached": reached,
        "tolerance": pruner.tolerance,
        "converged": abs(reached - pruner.keep_ratio) <= pruner.tolerance + 1e-12,
        "alpha": list(pruner.alpha_range),
        "alpha_reached": alpha_reached,
        "alpha_schedule": pruner.alpha_schedule,
        "pause_alpha_below_target": pruner.pause_alpha_below_target,
        "lambda_rule": pruner.lambda_rule,
        "lambda_scale": pruner.lambda_scale,
        "mask_lr": pruner.mask_lr,
        "stop_at_target": pruner.stop_at_target,
        "frozen": pruner.frozen,
        "epochs": epochs,
        "warmup_epochs": pruner.warmup_epochs,
        "mask_epochs": max(epochs - pruner.warmup_epochs, 0),
        "mask_steps": mask_steps,
        "mask": which,
    }
    if best is not None:
        hparams.update(best_epoch=best["epoch"], best_metric=best["metric"], best_value=best["value"])
    return Selection(
        indices=indices,
        num_samples=pruner.num_samples,
        method="adapruner",
        hparams=hparams,
        label_fingerprint=label_fingerprint(pruner.labels),
    )
