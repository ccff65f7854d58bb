"""core/lazy.py: a handle imports its module on first use, not before, and always answers as the module does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nestling.core.lazy import lazy_module


def test_a_lazy_handle_imports_its_module_on_first_use() -> None:
    code = (
        "import sys\n"
        "from nestling.core.lazy import lazy_module\n"
        "naming = lazy_module('nestling.core.tree.naming')\n"
        "before = 'nestling.core.tree.naming' in sys.modules\n"
        "value = naming.RUN_RESULT\n"
        "print(before, 'nestling.core.tree.naming' in sys.modules, value, naming.RUN_RESULT)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "run_result.json", "run_result.json"]


def test_a_handle_sees_what_is_set_on_its_module_after_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handle that copied its module's namespace on first use kept the old function after a monkeypatch (the
    report tests that replace write_report or tune_table saw the real ones)."""
    from nestling.core.tree import naming

    handle = lazy_module("nestling.core.tree.naming")
    assert handle.RUN_RESULT == "run_result.json"  # first use
    monkeypatch.setattr(naming, "RUN_RESULT", "patched.json")
    assert handle.RUN_RESULT == "patched.json"
