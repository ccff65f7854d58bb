"""core/lazy.py: a handle imports its module on first use, not before."""

from __future__ import annotations

import subprocess
import sys

import pytest


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


def test_a_name_rebound_in_the_module_is_seen_through_the_handle() -> None:
    from nestling.core.lazy import lazy_module
    from nestling.core.tree import naming

    handle = lazy_module("nestling.core.tree.naming")
    assert handle.RUN_RESULT == "run_result.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(naming, "RUN_RESULT", "elsewhere.json")
        assert handle.RUN_RESULT == "elsewhere.json"
    assert handle.RUN_RESULT == "run_result.json"
