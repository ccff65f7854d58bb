"""nestling: how a model is born — tune -> cross-validation -> training run.

`import nestling` is light (no torch, no polars): the Python API (`nestling.run`, `cv`, `tune`, `retrain`,
`report`, `collect`, `status`, `sync`, `prune_checkpoints`, `replay`, `stop`, `doctor`, `load`, `Result`; see
commands/api.py) is imported on
first use (PEP 562).

The package's folders are the rooms of docs/architecture.md. Modules of version 0.1 lived side by side at the top
(`nestling.config`, `nestling.container`, ...); those paths still import, as aliases of the modules' new homes
(`_MOVED`), so that user scripts and jobs pickled by an older version keep working.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not `from typing import ...`: importing typing alone would double the cost of the import
__version__ = "0.1.0"

API = ("run", "cv", "tune", "retrain", "report", "collect", "status", "sync", "prune_checkpoints", "replay", "stop",
       "doctor", "load", "Result")  # fmt: skip
ERRORS = ("NestlingError", "UsageError")
__all__ = [
    "NestlingError", "Result", "UsageError", "__version__", "collect", "cv", "doctor", "load", "prune_checkpoints",
    "replay", "report", "retrain", "run", "status", "stop", "sync", "tune",
]  # fmt: skip

if TYPE_CHECKING:
    from typing import Any

    from nestling.commands.api import (
        Result,
        collect,
        cv,
        doctor,
        load,
        prune_checkpoints,
        replay,
        report,
        retrain,
        run,
        status,
        stop,
        sync,
        tune,
    )
    from nestling.core.errors import NestlingError, UsageError

# 0.1's flat module names -> their rooms. `run`, `report`, `retrain`, `collect`, `status`, `sync` and `doctor` are
# not here: those names are the API's functions. The five entry points (worker, array_task, supervisor, cli, task)
# are real modules.
_MOVED = {
    "errors": "core.errors", "config": "core.options.config", "files": "core.options.config_files",
    "naming": "core.tree.naming", "records": "core.tree.launch_record", "attempt": "core.tree.attempt_lock",
    "claims": "core.tree.array_claims", "failfast": "core.tree.failfast", "supervision": "core.tree.supervisor_pid",
    "folds": "core.ml.folds", "scoring": "core.ml.scoring", "space": "core.ml.space",
    "devices": "core.host.devices", "jobenv": "core.host.jobenv", "slurm_query": "core.host.slurm_query",
    "tracking": "core.host.tracking", "container": "core.containers.spec",
    "lightning_compat": "core.compat.lightning_internals", "artifacts": "plan.store",
    "preflight": "plan.preflight", "cvtable": "execute.cv_table", "study": "execute.search.study",
    "progress": "read.progress",
    "html_report": "read.report.compose", "figures": "read.report.figures", "resume": "commands.resume",
    "detach": "commands.detach",
    "api": "commands.api",
}  # fmt: skip


class _MovedModules:
    """A meta path finder (importlib.abc.MetaPathFinder's protocol, without importing importlib.abc): an old name
    imports the module at its new home, as the same module object."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> object:
        head, _, old = name.partition(".")
        if head != __name__ or old not in _MOVED:
            return None
        import importlib.util

        return importlib.util.spec_from_loader(name, _MovedModules)  # type: ignore[arg-type]  # the protocol

    @staticmethod
    def create_module(spec: Any) -> object:
        import importlib
        import warnings

        new = f"{__name__}.{_MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    @staticmethod
    def exec_module(module: object) -> None:
        """The module ran already, under its new name."""


sys.meta_path.append(_MovedModules)  # type: ignore[arg-type]  # static methods: the class is the finder


def __getattr__(name: str) -> Any:
    if name in API:
        from nestling.commands import api

        return getattr(api, name)
    if name in ERRORS:
        from nestling.core import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'nestling' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
