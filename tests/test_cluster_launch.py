"""Scoring and ``lightning-prune run`` launched the way clusters launch training: ``torchrun`` and ``srun``.

An outside launcher starts every rank at once (Lightning's own DDP launcher instead starts rank 0 and
re-runs the command for the others when the first fit begins). The collectors must give a single
process's scores either way, and the pipeline's ranks must agree on the run directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from collector_harness import CASES, fit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "cluster_launch_worker.py"


def _env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # a launcher's variables from the test's own environment would confuse the one under test
        if not key.startswith(("SLURM_", "TORCHELASTIC_", "GROUP_", "ROLE_"))
        and key not in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    }
    pythonpath = os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**env, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(*args: str) -> list[str]:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` (the module, so the test's interpreter runs it)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def srun_environment(rank: int, port: int, ntasks: int = 2) -> dict[str, str]:
    """What ``srun --nodes=1 --ntasks-per-node=2`` sets for task ``rank`` (the variables Lightning reads)."""
    return {
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(ntasks),
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "lightning-prune-test",
        "SLURM_NODELIST": "127.0.0.1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def srun(command: list[str], timeout: int = 600, ntasks: int = 2) -> list[subprocess.CompletedProcess]:
    """Start ``command`` once per task with the environment ``srun`` gives it, and wait for all."""
    port = free_port()
    processes = [
        subprocess.Popen(
            command, env=_env(**srun_environment(rank, port, ntasks)), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for rank in range(ntasks)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode()))
    return results


@pytest.fixture(scope="module")
def single_process_scores() -> dict[str, np.ndarray]:
    collectors = {name: case.make() for name, case in CASES.items()}
    fit(list(collectors.values()))
    return {name: collector.scores.values for name, collector in collectors.items()}


def _check_scores(out: Path, single: dict[str, np.ndarray], environment: str) -> None:
    ranks = [dict(np.load(out / f"rank{rank}.npz")) for rank in (0, 1)]
    for rank in ranks:
        assert str(rank.pop("environment")) == environment
    assert sorted(ranks[0]) == sorted(CASES)
    for name, case in CASES.items():
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)  # every rank holds the scores
        np.testing.assert_allclose(ranks[0][name], single[name], rtol=case.rtol, atol=case.atol, err_msg=name)


@pytest.mark.slow
def test_collectors_under_torchrun_equal_one_process(tmp_path, single_process_scores):
    result = subprocess.run(
        torchrun(str(WORKER), str(tmp_path), "2"), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _check_scores(tmp_path, single_process_scores, "TorchElasticEnvironment")


@pytest.mark.slow
def test_collectors_under_srun_equal_one_process(tmp_path, single_process_scores):
    results = srun([sys.executable, str(WORKER), str(tmp_path), "2"])
    for result in results:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _check_scores(tmp_path, single_process_scores, "SLURMEnvironment")
