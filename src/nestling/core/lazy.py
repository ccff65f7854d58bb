"""Lazy handles to modules, declared at the top of the module that needs them.

A reader sees every dependency of a module in its first lines, while the import itself is paid on first use: the
CLI answers `--help`, `status` and `collect` without importing torch, polars or the launchers it does not need.
Optuna's `optuna/_imports.py` (`_LazyImport`) is the model. Declare it as

    if TYPE_CHECKING:
        from nestling.read import collect
    else:
        collect = lazy_module("nestling.read.collect")

so that type checkers see the real module. tests/unit/test_import_graph.py counts these handles as imports.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for a module: the first attribute read imports it, every read is answered by the module itself.

    Reads are not cached on the handle, so the handle never holds a stale copy of the module's namespace (a name
    rebound later, e.g. by a test's monkeypatch, is seen through the handle as through a plain import)."""

    def __getattr__(self, item: str) -> Any:
        return getattr(importlib.import_module(self.__name__), item)


def lazy_module(name: str) -> Any:
    """A handle to the module `name` (absolute), imported when one of its attributes is first used."""
    return LazyModule(name)
