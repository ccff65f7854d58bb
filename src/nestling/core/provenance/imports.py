"""Importing a task from its plan's code snapshot, in a worker (or in the CLI, to ask it for its data digest).

The snapshot's import path goes first on sys.path before the task's module is first imported, so the package, and
every module of the task's tree it imports later, come from the snapshot, not from the tree the user keeps
editing. A process imports one snapshot of a package: Python keeps the first import of a module, so a run that
needs another snapshot of the same package is refused (a new worker takes it) instead of silently using the wrong
code. The snapshot a process imported is remembered by its digest, so the copy a local pool's prestarted workers
import it from (taken before the plan exists) and the plan's copy, which hold the same files, count as one.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from collections.abc import Callable
from importlib.abc import PathEntryFinder

from nestling.core.ml.task import Task, load_task, task_module
from nestling.core.provenance.snapshot import CodeManifest, read_manifest
from nestling.core.tree import naming

_IMPORTED: dict[str, str] = {}  # top-level module -> the digest of the snapshot this process imported it from


class SnapshotConflict(RuntimeError):
    """The task's package is already imported in this process from other code than the run's snapshot."""


def load_task_from(task_spec: str, code: str | None) -> Task:
    """The task `task_spec`, its module imported from the snapshot `code` (a ``_code/{key}`` dir) when that holds
    one; as installed otherwise (a plan made with --snapshot_code false, or before snapshots: `code` None). A
    snapshot whose manifest is gone is an error, never a silent import of whatever the tree holds now."""
    if not code:
        return load_task(task_spec)
    manifest = read_manifest(code)
    if manifest is None:
        raise FileNotFoundError(
            f"the plan's code snapshot {code} (its manifest {naming.code_manifest(code).name}) is missing; resume "
            "with --force to take the current code"
        )
    if manifest.snapshot:
        use_snapshot(task_spec, manifest, code)
    return load_task(task_spec)


def use_snapshot(task_spec: str, manifest: CodeManifest, code: str) -> None:
    """Put the snapshot at `code` first on sys.path for the task's package (once per process and package)."""
    module = task_module(task_spec) or manifest.module
    top = module.split(".")[0]
    seen = _IMPORTED.get(top)
    if seen == manifest.digest:
        return
    if seen is not None:
        raise SnapshotConflict(
            f"this worker imported {top} from code snapshot {seen} and cannot import snapshot {manifest.digest} "
            "too; runs of one worker share one snapshot"
        )
    if top in sys.modules:
        where = getattr(sys.modules[top], "__file__", None) or "elsewhere"
        raise SnapshotConflict(
            f"{top} was imported from {where} before the plan's code snapshot {code} could be used; a task "
            "package must not be imported by the environment itself (sitecustomize, a .pth file)"
        )
    entry = os.path.join(os.path.abspath(code), manifest.import_path) if manifest.import_path else os.path.abspath(code)
    sys.path_hooks.insert(0, _no_bytecode_hook(os.path.abspath(code)))
    sys.path_importer_cache.pop(entry, None)
    sys.path.insert(0, entry)
    importlib.invalidate_caches()
    _IMPORTED[top] = str(manifest.digest)


class _SnapshotSourceLoader(importlib.machinery.SourceFileLoader):
    """Imports a snapshot's modules without writing their bytecode beside them: the snapshot stays the files that
    were submitted (its tree holds only what nestling wrote, with the submitter's umask), and the array tasks of a
    launch do not race to write the same __pycache__ on a shared file system. A task's own modules compile in
    milliseconds; torch and the rest come from site-packages and keep their bytecode."""

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:  # type: ignore[override]
        return None


def _no_bytecode_hook(snapshot: str) -> Callable[[str], PathEntryFinder]:
    """A sys.path hook for the directories below `snapshot` (other paths go to the next hook)."""
    finder_for = importlib.machinery.FileFinder.path_hook(
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (_SnapshotSourceLoader, importlib.machinery.SOURCE_SUFFIXES),
        (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
    )
    prefix = snapshot.rstrip(os.sep) + os.sep

    def hook(path: str) -> PathEntryFinder:
        if path != snapshot and not os.path.abspath(path).startswith(prefix):
            raise ImportError("not in the code snapshot")
        return finder_for(path)

    return hook


def imported_snapshot(module: str) -> str | None:
    """The digest of the snapshot this process imported `module`'s package from, if any."""
    return _IMPORTED.get(module.split(".")[0])
