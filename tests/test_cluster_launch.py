"""Scoring and ``lightning-prune run`` launched the way clusters launch training: ``torchrun`` and ``srun``.

An outside launcher starts every rank at once (Lightning's own DDP launcher instead starts rank 0 and
re-runs the command for the others when the first fit begins). The collectors must give a single
process's scores either way, and the pipeline's ranks must agree on the run directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from collector_harness import CASES, fit

import lightning_prune as lp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "ddp_collectors_worker.py"


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
        for key in [key for key in rank if key.endswith(":predicted_label")]:  # the worker's extras, not scores
            rank.pop(key)
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


# ------------------------------------------------------------------------------ lightning-prune run
PIPELINE_ARGS = [
    "--methods",
    "[{name: el2n, args: {epochs: 1}}]",
    "--score_epochs",
    "1",
    "--trainer",
    "{accelerator: cpu, devices: 2, strategy: ddp}",
]


def _cli(config: Path, out: Path) -> list[str]:
    return ["-m", "lightning_prune.cli", "run", "--config", str(config), "--output_dir", str(out), *PIPELINE_ARGS]


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    from test_cli import TINY

    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def lightning_launched_run(tmp_path_factory) -> Path:
    """The run as Lightning's own DDP launcher makes it (rank 1 re-runs the command at the first fit)."""
    from test_cli import TINY

    folder = tmp_path_factory.mktemp("lightning_launch")
    (folder / "tiny.yaml").write_text(TINY)
    result = subprocess.run(
        [sys.executable, *_cli(folder / "tiny.yaml", folder / "run")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run"


def _outputs(run: Path) -> dict[str, object]:
    cells = {
        path.name: {key: json.loads(path.read_text())[key] for key in ("test_acc", "num_train")}
        for path in sorted((run / "cells").iterdir())
    }
    return {"scores": lp.Scores.load(run / "scores" / "el2n.npz").values.tolist(), "cells": cells}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "srun"])
def test_run_launched_by_a_cluster_launcher_equals_lightnings_own_launch(
    launcher, tmp_path, tiny_config, lightning_launched_run
):
    out = tmp_path / "run"
    if launcher == "torchrun":
        result = subprocess.run(
            torchrun(*_cli(tiny_config, out)), env=_env(), capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        printed = result.stdout
    else:
        results = srun([sys.executable, *_cli(tiny_config, out)])
        for result in results:
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        printed = "".join(result.stdout for result in results)
    assert printed.count("Report: ") == 1  # one rank reports
    assert (out / "report.json").exists() and not list(out.rglob(".*.tmp"))
    assert _outputs(out) == _outputs(lightning_launched_run)


@pytest.mark.slow
def test_under_torchrun_a_busy_run_directory_stops_every_rank_before_it_writes(tmp_path, tiny_config):
    out = tmp_path / "run"
    out.mkdir()
    # another run's record, with nothing finished yet: a rank that went on alone would overwrite it
    record = json.dumps({"fingerprint": "0" * 16, "description": {"name": "another run"}})
    (out / "run.json").write_text(record)
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the other run's process holds the directory
        result = subprocess.run(
            torchrun(*_cli(tiny_config, out)), env=_env(), capture_output=True, text=True, timeout=600
        )
    assert result.returncode != 0
    assert result.stderr.count("is in use by another lightning-prune process") == 2, result.stderr[-3000:]
    assert "[rank 1] lightning-prune run: error:" in result.stderr
    assert (out / "run.json").read_text() == record
    assert sorted(path.name for path in out.iterdir()) == [".lock", "run.json"]


@pytest.mark.slow
def test_only_rank_zero_writes_the_report(tmp_path, tiny_config, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only
    from test_cli import run_cli

    import lightning_prune.pipeline.runner as runner

    out = tmp_path / "run"
    args = ["--methods", "[{name: el2n, args: {epochs: 1}}]", "--score_epochs", "1"]
    run_cli("run", tiny_config, out, *args)
    written = {path: path.stat().st_mtime_ns for path in [out / "report.json", *(out / "plots").iterdir()]}
    returned: list[dict] = []
    original = runner.PruningRun.run
    monkeypatch.setattr(runner.PruningRun, "run", lambda self: returned.append(original(self)) or returned[-1])
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # the same command on another rank: every step is done
    run_cli("run", tiny_config, out, *args)
    assert {path: path.stat().st_mtime_ns for path in written} == written
    assert json.loads(json.dumps(returned[0], default=str)) == json.loads((out / "report.json").read_text())
