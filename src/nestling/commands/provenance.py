"""The code a plan command hands its workers, and the drift it reports: what `run | cv | tune`, `--resume` and
`nestling retrain` share about provenance (core/provenance/ does the work)."""

from __future__ import annotations

import sys
from pathlib import Path

from nestling.core.errors import UsageError
from nestling.core.options.config import Config
from nestling.core.provenance.capture import capture_code
from nestling.core.provenance.record import TakenCode
from nestling.plan.preflight import check_artifact_dir


def take_code(config: Config, into: Path | None = None) -> TakenCode | None:
    """The task's code as it is now: snapshotted into the artifact dir's store (or, opted out, only recorded), for
    a new plan to link into its tree; `into`: straight into the ``_code`` of this existing plan root instead (a
    forced resume). Checks what it needs first (nothing written on a UsageError)."""
    if not config.launch.snapshot_max_mb > 0:
        raise UsageError(
            f"--snapshot_max_mb {config.launch.snapshot_max_mb:g} must be positive, e.g. --snapshot_max_mb 50 "
            "(or --snapshot_code false for no snapshot)"
        )
    if into is None:
        check_artifact_dir(Path(config.logging.artifact_dir))
    under = into or Path(config.logging.artifact_dir).resolve()
    return capture_code(config.data.task, under, enabled=config.launch.snapshot_code,
                        max_mb=config.launch.snapshot_max_mb)  # fmt: skip


def preload_dir(code: TakenCode | None) -> str | None:
    """Where a worker started before the plan exists imports the task from: the store's copy of the snapshot."""
    return str(code.snapshot_dir) if code is not None and code.manifest.snapshot else None


def print_drift(kind: str, name: str, lines: list[str]) -> None:
    """One line per kind of drift, on stderr (the tables and the outcome line stay on their streams)."""
    for line in lines:
        print(f"nestling: {kind} {name}: {line}", file=sys.stderr)
