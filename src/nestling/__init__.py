"""nestling: how a model is born — tune -> cross-validation -> training run.

`import nestling` is light (no torch, no polars): the Python API (`nestling.run`, `cv`, `tune`, `report`,
`retrain`, `load`, `Result`; see api.py) is imported on first use (PEP 562).

Three API names are also the names of submodules (`nestling/run.py`, `report.py`, `retrain.py`). Importing a
submodule normally binds it on the package (`nestling.report` would become the module once anything imported
`nestling.report`), so the package refuses that binding for the API names: `nestling.report` is always the
function, and the module stays what `from nestling.report import ...` and `sys.modules` give.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not `from typing import ...`: importing typing alone would double the cost of the import
__version__ = "0.1.0"

API = ("run", "cv", "tune", "report", "retrain", "load", "Result")
__all__ = ["Result", "UsageError", "__version__", "cv", "load", "report", "retrain", "run", "tune"]

if TYPE_CHECKING:
    from typing import Any

    from nestling.api import Result, cv, load, report, retrain, run, tune
    from nestling.errors import UsageError


class _Package(type(sys)):  # type: ignore[misc]  # types.ModuleType, without importing types
    def __setattr__(self, name: str, value: object) -> None:
        if name in API and isinstance(value, type(sys)):
            return  # a submodule named like an API function: not bound here (see the docstring)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in API:
        from nestling import api

        return getattr(api, name)
    if name == "UsageError":
        from nestling.errors import UsageError

        return UsageError
    raise AttributeError(f"module 'nestling' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
