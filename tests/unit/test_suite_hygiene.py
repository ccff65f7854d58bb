"""Rules of the suite itself that a new test file can break without any test failing (issue 27, hygiene)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def test_no_test_imports_through_the_repository_root() -> None:
    """`from tests.support import ...` or `from bench import ...` works under `python -m pytest` (the cwd is on
    sys.path) and fails to collect under plain `pytest`: the suite's helpers are imported by their module names
    (`support`, `slurm_work`, a sibling test module), which pytest puts on sys.path in both; `support.bench_tune`
    reaches bench/."""
    found = [
        f"{path.relative_to(TESTS)}: {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for name in _imported_modules(path)
        if name.split(".")[0] == "tests" or (name.split(".")[0] == "bench" and path != TESTS / "support.py")
    ]
    assert found == []


def test_the_check_sees_such_an_import(tmp_path: Path) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text("from tests.support import cli\nimport tests.slurm_work\nfrom support import poll\n")
    assert _imported_modules(bad) == ["tests.support", "tests.slurm_work", "support"]
