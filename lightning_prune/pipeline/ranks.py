"""How the ranks of a run agree on its directory, however they were launched.

Lightning's own DDP launcher starts rank 0 alone and re-runs the command for the other ranks when the
first fit begins, so rank 0 has taken the run directory's lock and decided what to resume before the
others exist. An outside launcher (``torchrun``, ``srun``) starts every rank at once: without a
rendezvous, rank 1 would read and write the directory while rank 0 is still taking the lock, cleaning
a killed process's temporary files or emptying a stale checkpoint folder, and it would go on alone
when rank 0 refuses the directory. Under such a launcher the ranks therefore join their process group
before the first step (as the first fit would, through the Trainer's own strategy), and rank 0 makes
every decision about the directory and hands it to the others (:func:`rank_zero_decides`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.utilities import rank_zero_only

from lightning_prune.distributed import distributed_ready

T = TypeVar("T")


def join_outside_launch(trainer: pl.Trainer) -> bool:
    """Join the ranks an outside launcher started, now, with ``trainer``'s strategy; whether it did.

    Outside launchers are the cluster environments that start every rank themselves (``torchrun``'s
    ``TorchElasticEnvironment``, ``SLURMEnvironment``, and Kubeflow, LSF, MPI). Nothing happens on one
    process, under Lightning's own launcher (its ranks join at the first fit) or when the process group
    is up already. Later Trainers of the run find the group and use it.
    """
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if trainer.world_size <= 1 or environment is None or not environment.creates_processes_externally:
        return False
    if isinstance(environment, LightningEnvironment):
        # LOCAL_RANK set: a rank Lightning's own launcher started at rank 0's first fit (rank 0 is in that
        # fit, so a collective here would meet the fit's); such a rank joins at its own first fit
        return False
    if distributed_ready():
        return False
    trainer.strategy.setup_environment()  # what Trainer.fit does first: the device, then the process group
    return True


def rank() -> int:
    """This process's global rank: the process group's, else the one Lightning read from the launcher's
    environment (``rank_zero_only.rank``, set per process; the stubs do not declare it)."""
    if distributed_ready():
        return int(torch.distributed.get_rank())
    return int(getattr(rank_zero_only, "rank", 0))


def rank_zero_decides(decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 and its result, or the error it raised, on every rank.

    Without a process group every process decides for itself (Lightning's launcher starts the other
    ranks after rank 0 has decided, from the files rank 0 left). Every rank of a group must call this
    at the same point, since it is a collective.
    """
    if not distributed_ready() or torch.distributed.get_world_size() == 1:
        return decide()
    outcome: list[Any] = [None]
    if torch.distributed.get_rank() == 0:
        try:
            outcome = [(True, decide())]
        except Exception as error:  # noqa: BLE001 -- handed to every rank, re-raised on each
            outcome = [(False, _transportable(error))]
    torch.distributed.broadcast_object_list(outcome, src=0)
    succeeded, payload = outcome[0]
    if not succeeded:
        raise payload
    return payload


def _transportable(error: Exception) -> Exception:
    """``error`` itself when it survives pickling, else a ``RuntimeError`` carrying its message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 -- any error type may refuse pickling
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
