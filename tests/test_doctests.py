"""The docstrings' ``Example::`` blocks are doctests, and they run (on CPU, tiny data, seconds)."""

from __future__ import annotations

import doctest
import importlib
import io
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_prune"
# The indented block under a line ending in "Example::" (reST literal block), up to the next dedent.
EXAMPLE_BLOCK = re.compile(r"^(?P<indent>[ \t]*)Example::\n\n(?P<body>(?:(?P=indent)[ \t]+.*\n|\n)+)", re.M)


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "Example::" in path.read_text():
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_package_has_examples_to_run() -> None:
    # A regex or path change that finds nothing would make every test below vacuous.
    assert len(MODULES) >= 6, MODULES


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_example_block_is_a_doctest(path: Path) -> None:
    for block in EXAMPLE_BLOCK.finditer(path.read_text()):
        assert ">>> " in block.group("body"), (
            f"{path.relative_to(PACKAGE.parent)}: an Example:: block without '>>>' lines is never run; write it as "
            f"a doctest on tiny data:\n{block.group('body')}"
        )


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that save files write them here
    module = importlib.import_module(module_name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module_name) if t.examples]
    assert tests, f"{module_name} has an Example:: block but no doctest in it"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, report.getvalue()
