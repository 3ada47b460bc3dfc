"""benchmarks/gpu_check.py keeps working between GPU loans: its smoke mode, on the CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_in_smoke_mode_and_writes_its_figures(tmp_path, capsys):
    figures = _script().main(["--smoke", "--json", str(tmp_path / "figures.json")])
    assert json.loads((tmp_path / "figures.json").read_text()) == json.loads(json.dumps(figures))
    overhead, infobatch = figures["collector_overhead"], figures["infobatch"]
    assert figures["settings"]["precision"] == "32-true" and figures["device"].startswith("CPU")
    # every fit but its warm-up epoch is timed: 2 of 3 epochs, once with and once without the collectors
    assert len(overhead["plain_epochs"]) == len(overhead["collected_epochs"]) == 2
    assert math.isfinite(overhead["ratio"]) and overhead["ratio"] > 0
    assert infobatch["full_samples"] == [32 * 3]  # every sample of every epoch
    assert 0 < infobatch["samples_ratio"] < 1  # InfoBatch skipped some samples, and forwarded some
    assert math.isfinite(infobatch["time_ratio"]) and infobatch["time_ratio"] > 0
    printed = capsys.readouterr().out
    assert "overhead ratio (with / without)" in printed and "samples forwarded, infobatch / full" in printed


def test_without_a_gpu_the_full_check_says_to_use_the_smoke_mode(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the full check would run")
    with pytest.raises(SystemExit) as stop:
        _script().main([])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "no CUDA device is visible" in err and "add --smoke" in err
