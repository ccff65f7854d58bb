"""Taking a plan's provenance when it is made: the code snapshot (taken before the plan exists, so that a local
pool started while the CLI plans imports the task from it already), the environment, the data digest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nestling.core.errors import UsageError
from nestling.core.ml.task import declared_data_digest
from nestling.core.provenance import environment
from nestling.core.provenance.code_tree import CodeSource, locate
from nestling.core.provenance.record import Provenance, TakenCode
from nestling.core.provenance.snapshot import (
    CodeManifest,
    check_size,
    read_code,
    without_snapshot,
    write_snapshot,
)

BUILTIN_REASON = "a built-in task: nestling's own code, see nestling_version"
OPTED_OUT_REASON = "--snapshot_code false"


def capture_code(task_spec: str, under: Path, *, enabled: bool, max_mb: float) -> TakenCode | None:
    """Snapshot the task's code into ``{under}/_code`` (or, opted out or built in, record only its commit); None
    when its module is not found (planning then reports the task). A UsageError, with nothing written, for a tree
    over `max_mb` or a task module git ignores."""
    source = locate(task_spec)
    if source is None:
        return None
    return TakenCode(_manifest_for(source, task_spec, Path(under), enabled, max_mb), Path(under))


def _manifest_for(source: CodeSource, task_spec: str, under: Path, enabled: bool, max_mb: float) -> CodeManifest:
    if source.builtin:
        return without_snapshot(source, BUILTIN_REASON)
    if not enabled:
        return without_snapshot(source, OPTED_OUT_REASON)
    _check_snapshot(source, task_spec, max_mb)
    return write_snapshot(read_code(source), under)


def _check_snapshot(source: CodeSource, task_spec: str, max_mb: float) -> None:
    if not source.holds_task():
        raise UsageError(
            f"--task {task_spec!r}: git ignores {source.entry} in {source.root}, so a code snapshot could not import "
            "it: stop ignoring it (or commit it), or pass --snapshot_code false"
        )
    check_size(source, max_mb)


def describe_code(task_spec: str, *, enabled: bool, max_mb: float) -> str | None:
    """For a dry run: what a launch would snapshot (checked as a launch checks it), writing nothing."""
    source = locate(task_spec)
    if source is None or source.builtin:  # (a built-in task's code is nestling's: its version says it)
        return None
    state = f"commit {source.commit[:12]}" if source.commit else ("not in git" if not source.in_git else "no commit")
    state += " + uncommitted changes" if source.dirty else ""
    if not enabled:
        return f"code: {source.root} ({state}); no snapshot ({OPTED_OUT_REASON})"
    _check_snapshot(source, task_spec, max_mb)
    size = check_size(source, max_mb)
    return f"code: {source.root} ({state}); a launch snapshots {len(source.files)} files, {size / 1e6:.1f} MB"


def plan_data_digest(task: Any, task_spec: str) -> str | None:
    """The data digest the plan records; a UsageError when the task's data_digest() fails (before any run)."""
    try:
        return declared_data_digest(task)
    except Exception as exc:  # noqa: BLE001 - the task's own code: whatever it raises is the user's to fix
        raise UsageError(
            f"--task {task_spec!r}: data_digest() raised {type(exc).__name__}: {exc}; fix it (or remove it)"
        ) from exc


def plan_provenance(code: TakenCode | None, task: Any, task_spec: str) -> Provenance:
    """What plan.json records: the code's place in the plan, this environment, the task's data digest."""
    return Provenance(code.ref if code else None, environment.current(), plan_data_digest(task, task_spec))
