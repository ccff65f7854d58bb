"""What changed since a plan was made: its code, its environment, its data. `--resume` and `nestling retrain` print
one line per kind that changed (also when nothing is left to run), and say which code the runs they start use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nestling.core.ml.task import declared_data_digest, load_task
from nestling.core.provenance import environment
from nestling.core.provenance.code_tree import locate
from nestling.core.provenance.environment import EnvRecord
from nestling.core.provenance.imports import SnapshotConflict, load_task_from
from nestling.core.provenance.record import Provenance
from nestling.core.provenance.snapshot import CodeManifest, changed_files, hash_files

MAX_NAMED = 8  # files or distributions named in one line; the rest are counted


@dataclass(frozen=True)
class Drift:
    """The lines to print (one per kind that changed), and what was found now (a new plan records it)."""

    lines: list[str] = field(default_factory=list)
    env: EnvRecord | None = None
    data_digest: str | None = None


def drift(
    provenance: Provenance | None, root: Path, task_spec: str, *, forced: bool, runs: str = "the resumed runs"
) -> Drift:
    """Compare the plan at `root` (its recorded `provenance`) with this machine now. `forced`: the runs started
    next use the current code (--force), not the plan's snapshot; the code line says which, naming them `runs`."""
    now = environment.current()
    if provenance is None:  # a plan made before provenance was recorded: nothing to compare
        return Drift([], now, None)
    lines = []
    manifest = provenance.manifest(root)
    if manifest is not None:
        lines += code_lines(manifest, task_spec, forced, runs)
    env_changes = environment.changes(provenance.env, now)
    if env_changes:
        lines.append(f"environment changed since the plan: {_named(env_changes)}; {runs} record the environment "
                     "they run in (env_digest)")  # fmt: skip
    data_now = None
    if provenance.data_digest is not None:
        data_now, problem = _data_digest_now(task_spec, manifest, root, provenance, forced)
        if problem:
            lines.append(f"data: could not check against the plan's data digest ({problem})")
        elif data_now != provenance.data_digest:
            lines.append(f"data changed since the plan: the task's data_digest() gave {provenance.data_digest!r}, "
                         f"now {data_now!r}")  # fmt: skip
    return Drift(lines, now, data_now)


def code_lines(manifest: CodeManifest, task_spec: str, forced: bool, runs: str = "the resumed runs") -> list[str]:
    """`code changed since the plan: models/unet.py, train.py; the resumed runs use ...`, or nothing."""
    source = locate(task_spec)
    if manifest.snapshot:
        if source is None:
            return [f"code: the task's module is no longer found here; {runs} use the plan's snapshot"
                    f"{'' if not forced else ' (--force has no current code to take)'}"]  # fmt: skip
        changed = changed_files(manifest, hash_files(source))
        if not changed:
            return []
        use = (f"{runs} use the current code (--force)" if forced
               else f"{runs} use the plan's snapshot (--force to take the current code)")  # fmt: skip
        return [f"code changed since the plan: {_named(changed)}; {use}"]
    if source is None:
        return []
    if (source.commit, bool(source.dirty)) == (manifest.commit, bool(manifest.dirty)):
        return []  # (with uncommitted changes then and now, a tree without a snapshot cannot tell more)
    before = f"{manifest.short_commit or 'no commit'}{' + uncommitted changes' if manifest.dirty else ''}"
    after = f"{(source.commit or '')[:12] or 'no commit'}{' + uncommitted changes' if source.dirty else ''}"
    return [f"code changed since the plan: {before} -> {after}; {runs} import the current code (no snapshot: "
            f"{manifest.reason})"]  # fmt: skip


def _data_digest_now(
    task_spec: str, manifest: CodeManifest | None, root: Path, provenance: Provenance, forced: bool
) -> tuple[str | None, str | None]:
    """(the task's data digest now, None) or (None, why it could not be asked): the task is loaded from the code
    the runs will use."""
    try:
        try:
            snapshot = manifest is not None and manifest.snapshot and not forced and provenance.code
            task = load_task_from(task_spec, str(root / str(provenance.code))) if snapshot else load_task(task_spec)
        except SnapshotConflict:  # this process imported the task already (the Python API): ask that one
            task = load_task(task_spec)
        return declared_data_digest(task), None
    except Exception as exc:  # noqa: BLE001 - the task's own code: report it, the resume goes on
        return None, f"{type(exc).__name__}: {exc}"


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" (and {len(items) - MAX_NAMED} more)" if len(items) > MAX_NAMED else "")
