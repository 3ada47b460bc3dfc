"""The package's declared constraints hold for what is installed, and the install loads what it needs."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# torchvision minor release -> the one torch minor release it is built for (tested pairs)
TORCHVISION_FOR_TORCH = {(2, 12): (0, 27), (2, 13): (0, 28), (2, 14): (0, 29)}


def _minor(text: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", text).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


def _bounds(requirement_name: str) -> tuple[tuple[int, int], tuple[int, int]]:
    line = next(d for d in PYPROJECT["project"]["dependencies"] if re.match(rf"{requirement_name}\b", d))
    low = re.search(r">=\s*([\d.]+)", line)
    high = re.search(r"<\s*([\d.]+)", line)
    assert low and high, f"{line!r} must declare a lower and an upper bound"
    return _minor(low.group(1)), _minor(high.group(1))


def test_declared_torch_range_is_exactly_the_tested_pairs() -> None:
    (torch_low, torch_high), (vision_low, vision_high) = _bounds("torch"), _bounds("torchvision")
    torch_minors = [(2, m) for m in range(torch_low[1], torch_high[1])]
    assert torch_minors == sorted(TORCHVISION_FOR_TORCH), "every torch minor allowed must have a known torchvision"
    vision_minors = [(0, m) for m in range(vision_low[1], vision_high[1])]
    assert vision_minors == sorted(TORCHVISION_FOR_TORCH.values())


def test_installed_torch_and_torchvision_are_a_loading_pair() -> None:
    import torchvision
    import torchvision.ops

    torch_minor, vision_minor = _minor(torch.__version__), _minor(torchvision.__version__)
    assert TORCHVISION_FOR_TORCH.get(torch_minor) == vision_minor, (torch.__version__, torchvision.__version__)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.1], [5.0, 5.0, 6.0, 6.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert kept.tolist() == [0, 2]


def test_optional_parts_are_extras_and_the_test_extra_installs_them() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    core = " ".join(PYPROJECT["project"]["dependencies"])
    assert "ortools" not in core and "matplotlib" not in core
    assert any(d.startswith("ortools") for d in extras["influence"])
    assert any(d.startswith("matplotlib") for d in extras["plots"])
    assert "lightning-prune[all]" in extras["test"]
    assert version("ortools") and version("matplotlib")  # the test environment has both


def test_license_and_typing_marker_ship_with_the_package() -> None:
    assert PYPROJECT["project"]["license"]["text"] == "Apache-2.0"
    assert "Apache License" in (REPO / "LICENSE").read_text()[:200]
    assert "License :: OSI Approved :: Apache Software License" in PYPROJECT["project"]["classifiers"]
    assert (REPO / "lightning_prune" / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["lightning_prune"]
