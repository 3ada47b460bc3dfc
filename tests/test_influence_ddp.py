"""Influence vectors under torch.distributed (2 gloo processes) equal the single-process ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_prune.data.indexed import IndexedDataset
from lightning_prune.influence import influence_vectors

NUM_SAMPLES = 23  # odd: the DistributedSampler pads one rank with a duplicate sample


def _problem() -> tuple[nn.Module, IndexedDataset]:
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(NUM_SAMPLES, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (NUM_SAMPLES,), generator=generator)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    return model, IndexedDataset(TensorDataset(X, y))


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model, dataset = _problem()
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=3)
        loader = DataLoader(dataset, batch_size=4, sampler=sampler)
        vectors = influence_vectors(model, loader, damping=0.05, dtype=np.float64)
        np.save(os.path.join(out_dir, f"S{rank}.npy"), vectors.S)
        np.save(os.path.join(out_dir, f"labels{rank}.npy"), vectors.labels)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    model, dataset = _problem()
    single = influence_vectors(model, DataLoader(dataset, batch_size=7), damping=0.05, dtype=np.float64, gather=None)
    for rank in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"S{rank}.npy"), single.S, rtol=1e-9, atol=1e-14)
        np.testing.assert_array_equal(np.load(tmp_path / f"labels{rank}.npy"), single.labels)


def test_gather_callable_contract() -> None:
    """A strategy-like object's all_gather is used, with variable-length shards padded and trimmed."""

    class OneRankStrategy:
        calls = 0

        def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
            OneRankStrategy.calls += 1
            return tensor.unsqueeze(0)

    model, dataset = _problem()
    loader = DataLoader(dataset, batch_size=5, shuffle=True)
    gathered = influence_vectors(model, loader, damping=0.05, dtype=np.float64, gather=OneRankStrategy())
    plain = influence_vectors(model, loader, damping=0.05, dtype=np.float64, gather=None)
    assert OneRankStrategy.calls == 5  # the row counts, then features, probabilities, labels, indices
    np.testing.assert_allclose(gathered.S, plain.S, rtol=1e-9, atol=1e-14)
