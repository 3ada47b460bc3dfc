"""Gathering per-sample rows across ranks: the one exchange collectors and influence pruning share.

Under DDP each rank holds rows for the samples it was dealt, a different number per rank, and a
``DistributedSampler`` pads the last batches with duplicates. :class:`RankRows` gives every rank all
ranks' rows in rank order (padded to the longest rank for the collective, stripped after), one
tensor at a time so that only one gathered tensor exists at once; :func:`first_occurrence` then
keeps each sample's first row. ``gather`` is any ``all_gather`` with Lightning's contract
(``Strategy.all_gather``: a tensor in, the ranks' tensors stacked ``[world, ...]`` out);
:func:`all_gather` is that contract on ``torch.distributed`` directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

GatherFn = Callable[[Tensor], Tensor]
"""``gather(tensor) -> [world_size, *tensor.shape]``: every rank's tensor, in rank order."""


def distributed_ready() -> bool:
    """Whether a ``torch.distributed`` process group is up (what :func:`all_gather` runs on)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_gather(tensor: Tensor) -> Tensor:
    """``[world_size, *tensor.shape]``: every rank's ``tensor`` over the default process group, on
    ``tensor``'s device.

    Lightning's ``Strategy.all_gather`` calls ``torch.distributed.nn.functional.all_gather``, an
    autograd-aware collective that torch has deprecated (a ``FutureWarning`` on every rank). Per-sample
    state needs no gradient, so this uses the plain collective. The tensor travels on the backend's
    device (CUDA for NCCL, CPU otherwise).
    """
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    local = tensor.to(device).contiguous()
    out = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return torch.stack(out).to(tensor.device)


class RankRows:
    """All ranks' rows of variable length, gathered one tensor at a time.

    Args:
        gather: the collective (e.g. ``trainer.strategy.all_gather``).
        local_indices: ``[n]`` sample indices of this rank's rows; every rank passes its own ``n``.
    """

    def __init__(self, gather: GatherFn, local_indices: Tensor) -> None:
        self._gather = gather
        self._local = int(local_indices.numel())
        counts = gather(torch.tensor([self._local], dtype=torch.int64, device=local_indices.device))
        counts = counts.reshape(-1).to(torch.int64)
        self._width = int(counts.max())  # one host synchronisation per exchange, not per row
        slots = torch.arange(self._width, device=counts.device)
        self._valid = (slots[None, :] < counts[:, None]).reshape(-1)
        self.indices = self.gather(local_indices)
        """``[total]`` the sample index of every gathered row, rank order (duplicates included)."""

    def gather(self, local_rows: Tensor) -> Tensor:
        """``[total, ...]``: every rank's ``local_rows`` (first dimension ``n``), in rank order, on the
        device of ``local_rows``."""
        if local_rows.shape[0] != self._local:
            raise ValueError(f"expected {self._local} local rows, got {local_rows.shape[0]}.")
        wire_dtype = torch.uint8 if local_rows.dtype == torch.bool else local_rows.dtype  # gloo gathers no bool
        padded = torch.zeros((self._width, *local_rows.shape[1:]), dtype=wire_dtype, device=local_rows.device)
        padded[: self._local] = local_rows.to(wire_dtype)
        stacked = self._gather(padded).reshape(-1, *local_rows.shape[1:])
        return stacked[self._valid.to(stacked.device)].to(device=local_rows.device, dtype=local_rows.dtype)


def first_occurrence(indices: Tensor) -> tuple[Tensor, Tensor]:
    """``(unique, position)``: the distinct values of ``indices`` ascending, and where each first occurs."""
    order = torch.argsort(indices, stable=True)
    ordered = indices[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return ordered[first], order[first]
