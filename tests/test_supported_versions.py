"""What the package claims to support is what is checked: its minimum versions and its platforms.

``.ci/min_versions`` runs the fast tier on ``.ci/min_versions.txt``: each pin there must be the lower
bound pyproject.toml declares, or that tier would prove another minimum. The run directory's lock is
``fcntl.flock`` (POSIX; tests/test_packaging.py keeps the platform classifiers to that): elsewhere it
says so, and the Python API, which takes no lock, still imports.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
FIRST_RELEASE = {"ortools": "9.13.4784"}  # ortools numbers its releases major.minor.build: 9.13's first build


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()  # type: ignore[union-attr]


def _pins() -> dict[str, str]:
    lines = (REPO / ".ci" / "min_versions.txt").read_text().splitlines()
    return {_name(line): line.split("==")[1] for line in lines if line.strip() and not line.startswith("#")}


def _lower_bounds() -> dict[str, str]:
    project = PYPROJECT["project"]
    runtime = list(project["dependencies"])
    runtime += [r for extra in ("influence", "plots", "hf", "litdata") for r in project["optional-dependencies"][extra]]
    bounds = {}
    for requirement in runtime:
        low = re.search(r">=\s*([\d.]+)", requirement)
        assert low, f"{requirement!r} declares no lower bound: the minimum tier cannot test it"
        bounds[_name(requirement)] = low.group(1)
    return bounds


def _padded(version: str) -> tuple[int, ...]:
    parts = tuple(int(part) for part in version.split("."))
    return parts + (0,) * (3 - len(parts))


def test_every_runtime_minimum_is_pinned_for_the_minimum_tier():
    pins, bounds = _pins(), _lower_bounds()
    assert set(bounds) <= set(pins), f"not pinned in .ci/min_versions.txt: {sorted(set(bounds) - set(pins))}"
    for name, low in bounds.items():
        expected = FIRST_RELEASE.get(name, ".".join(map(str, _padded(low))))
        assert pins[name] == expected, (
            f"{name}: pyproject.toml declares >={low}, .ci/min_versions.txt pins {pins[name]}"
        )


def test_the_minimum_tier_runs_the_lowest_python():
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
    script = (REPO / ".ci" / "min_versions").read_text()
    assert "(3, 10)" in script and '-m "not slow"' in script
    assert "Programming Language :: Python :: 3.10" in PYPROJECT["project"]["classifiers"]


def test_without_fcntl_the_run_lock_names_the_supported_platforms(tmp_path, monkeypatch):
    from lightning_prune.pipeline import run_dir

    monkeypatch.setattr(run_dir, "fcntl", None)  # what Windows has
    with pytest.raises(RuntimeError, match=r"needs fcntl.*Linux and macOS.*Python API"):
        with run_dir.locked(tmp_path / "run"):
            pass
    assert not (tmp_path / "run").exists()
