"""The code a plan command hands its workers, and the drift it reports: what `run | cv | tune`, `--resume` and
`nestling retrain` share about provenance (core/provenance/ does the work)."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

from nestling.core.errors import UsageError
from nestling.core.options.config import Config
from nestling.core.provenance.capture import capture_code
from nestling.core.provenance.record import TakenCode

TEMPORARY_PREFIX = "nestling-code-"


def take_code(config: Config, into: Path | None = None) -> TakenCode | None:
    """The task's code as it is now, snapshotted (or, opted out, only recorded): into a temporary directory of its
    own for a plan not written yet (nothing lands in the artifact dir before planning succeeded; `release_code`
    removes it), or straight into the ``_code`` of the existing plan root `into` (a forced resume)."""
    if not config.launch.snapshot_max_mb > 0:
        raise UsageError(
            f"--snapshot_max_mb {config.launch.snapshot_max_mb:g} must be positive, e.g. --snapshot_max_mb 50 "
            "(or --snapshot_code false for no snapshot)"
        )
    task, enabled, max_mb = config.data.task, config.launch.snapshot_code, config.launch.snapshot_max_mb
    if into is not None:
        return capture_code(task, into, enabled=enabled, max_mb=max_mb)
    under = Path(tempfile.mkdtemp(prefix=TEMPORARY_PREFIX))
    try:
        taken = capture_code(task, under, enabled=enabled, max_mb=max_mb)
    except BaseException:
        shutil.rmtree(under, ignore_errors=True)
        raise
    if taken is None:
        shutil.rmtree(under, ignore_errors=True)
        return None
    return dataclasses.replace(taken, temporary=True)


def release_code(code: TakenCode | None) -> None:
    """Remove the temporary snapshot once the plan has its own copy and no worker started before it runs."""
    if code is not None and code.temporary:
        shutil.rmtree(code.under, ignore_errors=True)


def preload_dir(code: TakenCode | None) -> str | None:
    """Where a worker started before the plan exists imports the task from: the snapshot as taken."""
    return str(code.snapshot_dir) if code is not None and code.manifest.snapshot else None


def print_drift(kind: str, name: str, lines: list[str]) -> None:
    """One line per kind of drift, on stderr (the tables and the outcome line stay on their streams)."""
    for line in lines:
        print(f"nestling: {kind} {name}: {line}", file=sys.stderr)
