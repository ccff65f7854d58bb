"""nestling: how a model is born — tune -> cross-validation -> training run.

`import nestling` is light (no torch, no polars): the Python API (`nestling.run`, `cv`, `tune`, `report`,
`retrain`, `load`, `Result`; see api.py) is imported on first use (PEP 562).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: importing typing alone would double the cost of the import
__version__ = "0.1.0"

API = ("run", "cv", "tune", "report", "retrain", "load", "Result")
__all__ = ["Result", "UsageError", "__version__", "cv", "load", "report", "retrain", "run", "tune"]

if TYPE_CHECKING:
    from typing import Any

    from nestling.api import Result, cv, load, report, retrain, run, tune
    from nestling.errors import UsageError


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
