"""A worker's one-time cost: the torch + Lightning import, paid once per process (and timed apart from the runs),
before the first run arrives when the pool is prestarted."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from nestling.core.host import worker_limits
from nestling.core.ml.task import task_description
from nestling.execute.training import cached_task


class _Startup:
    """The first run of a process pays the torch + Lightning import (seconds); later runs of a warm worker do not.

    Timed apart from the run and recorded once, as the first result's worker_startup_s, so that durations of
    identical runs compare. A worker that preloaded (see `preload`) reports the time its preload took."""

    paid = False
    preloaded_s: float | None = None
    described_s = 0.0


def preload(task_spec: str | None = None, code: str | None = None) -> float:
    """Pay the one-time imports now (torch, Lightning, the task's module from the code snapshot `code`), before
    the first run arrives.

    A local worker pool is started while the CLI still loads the task and plans (issue 15 #1), so this import
    overlaps the CLI's own instead of following it. Errors are left to the run that needs the import: it records
    them as its error."""
    clock = time.perf_counter()
    with contextlib.suppress(ImportError):
        import lightning.pytorch  # noqa: F401  (imports torch)
    if task_spec:
        with contextlib.suppress(Exception):
            cached_task(task_spec, code)
    _Startup.preloaded_s = round(time.perf_counter() - clock + _Startup.described_s, 3)
    return _Startup.preloaded_s


def describe_task(task_spec: str, code: str | None = None) -> dict[str, Any]:
    """Load the task (its module may import torch: this is the one import) and describe its planning half for the
    CLI: {"task": payload} or {"task_error": why} (the CLI then loads the task itself, and reports as before)."""

    clock = time.perf_counter()
    try:
        reply: dict[str, Any] = {"task": task_description(cached_task(task_spec, code))}
    except Exception as exc:  # noqa: BLE001 - the CLI reproduces the error with its own load
        reply = {"task_error": f"{type(exc).__name__}: {exc}"}
    _Startup.described_s = round(time.perf_counter() - clock, 3)
    return reply


def worker_startup() -> float | None:
    """Seconds the one-time imports took, on this process's first run; None on every later run.

    Before every run, torch's intra-op threads are set to this worker's budget (worker_limits): torch sizes its pool
    from MKL_NUM_THREADS and the cores as much as from OMP_NUM_THREADS, and a task may have changed it."""
    if _Startup.paid:
        worker_limits.apply()
        return None
    _Startup.paid = True
    clock = time.perf_counter()
    with contextlib.suppress(ImportError):  # reported by the run itself, as its error, when training imports it
        import lightning.pytorch  # noqa: F401  (imports torch)
    now = round(time.perf_counter() - clock, 3)
    worker_limits.apply()
    return now if _Startup.preloaded_s is None else round(_Startup.preloaded_s + now, 3)


def quiet_lightning() -> None:
    """Lightning's info lines (GPU available, tips) would drown the progress of hundreds of runs."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    os.environ.setdefault("WANDB_SILENT", "true")
