"""The package's declared constraints hold for what is installed, and the install loads what it needs."""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")  # tomli: what pytest uses on 3.10

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


def test_classifiers_name_the_platforms_the_run_lock_supports() -> None:
    # The run directory's lock is fcntl.flock: POSIX only, so "OS Independent" would be a false promise.
    classifiers = PYPROJECT["project"]["classifiers"]
    assert "import fcntl" in (REPO / "lightning_prune" / "pipeline" / "run_dir.py").read_text()
    assert "Operating System :: OS Independent" not in classifiers
    assert "Operating System :: POSIX" in classifiers
    assert not any("Windows" in c for c in classifiers)


def test_pytest_is_strict_about_markers_xfails_and_the_projects_future_warnings() -> None:
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in options["addopts"].split() and options["strict_markers"] is True
    assert options["xfail_strict"] is True
    assert options["filterwarnings"][-1].startswith("error::FutureWarning:lightning_prune")  # the last match wins


def _warn_from(module: str) -> None:
    import warnings

    warnings.warn_explicit("scheduled to change", FutureWarning, f"{module.replace('.', '/')}.py", 1, module=module)


@pytest.mark.parametrize("module", ["lightning_prune", "lightning_prune.selection.strategies"])
def test_a_future_warning_issued_in_the_package_fails_the_test(module: str) -> None:
    with pytest.raises(FutureWarning, match="scheduled to change"):
        _warn_from(module)


def _library_call_that_warns() -> None:
    import warnings

    warnings.warn("this argument is scheduled to change", FutureWarning, stacklevel=2)  # as torch and numpy do


def test_a_libraries_future_warning_about_a_call_from_the_package_fails_the_test() -> None:
    # The filter matches the module the warning is attributed to: with stacklevel=2 that is the caller's.
    caller = {"__name__": "lightning_prune.some_module", "call": _library_call_that_warns}
    with pytest.raises(FutureWarning, match="scheduled to change"):
        exec(compile("call()", "lightning_prune/some_module.py", "exec"), caller)
    with pytest.warns(FutureWarning):  # the same call from user code is reported, not an error
        exec(compile("call()", "user_code.py", "exec"), {"__name__": "user_code", "call": _library_call_that_warns})


@pytest.mark.parametrize("module", ["torch.nn.modules", "lightning_prune_extras", "tests.helpers"])
def test_a_future_warning_issued_elsewhere_is_only_reported(module: str) -> None:
    with pytest.warns(FutureWarning, match="scheduled to change"):
        _warn_from(module)


def test_unknown_markers_and_passing_xfails_fail_under_the_projects_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml((REPO / "pyproject.toml").read_text())
    pytester.makepyfile(
        test_strict="""
        import pytest

        @pytest.mark.slwo
        def test_misspelt_marker():
            pass

        @pytest.mark.xfail(reason="the bug this marked is fixed")
        def test_fixed_bug():
            pass
        """
    )
    result = pytester.runpytest_inprocess("test_strict.py", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*'slwo' not found in `markers` configuration option*"])
    assert result.ret != 0
    pytester.makepyfile(test_strict="import pytest\n\n@pytest.mark.xfail\ndef test_fixed_bug():\n    pass\n")
    result = pytester.runpytest_inprocess("test_strict.py", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*"])
