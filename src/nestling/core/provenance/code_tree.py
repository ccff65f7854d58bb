"""Where a task's code lives, and which of its files a snapshot takes.

The task spec names a module; its top-level package (or the module itself) is found on sys.path without being
imported (``importlib.util.find_spec`` of a top-level name runs no code). The task's code is then:

- in a git work tree: the tree that holds the package, as git sees the project: tracked files and untracked files
  git does not ignore (``git ls-files --cached --others --exclude-standard``, submodules' tracked files included).
  The commit is HEAD's; the tree is dirty when ``git status --porcelain`` lists anything.
- outside git: the package directory (a single module: the module and the ``.py`` files beside it, which it may
  import), without ``__pycache__`` and hidden entries.

Files keep their paths relative to the *layout root*, the outer one of the work tree and the sys.path entry the
package is found under, so that the snapshot's ``import_path`` (that entry, relative to the layout root) imports the
package exactly as the live tree did: ``src/`` layouts and packages that are themselves a git repository alike.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nestling.core.host.processes import Run
from nestling.core.ml.task import task_module

GIT_TIMEOUT_S = 30  # a git call on a slow network file system; past it the tree counts as not in git
NESTLING_PACKAGE = "nestling"


@dataclass(frozen=True)
class CodeSource:
    """The task's code as found on this machine now.

    ``root``: the layout root (absolute); ``files``: the files a snapshot takes, POSIX paths relative to ``root``;
    ``import_path``: the sys.path entry of the task's package, relative to ``root`` ("" for the root itself);
    ``module``: the task's top-level module; ``commit``/``dirty``: git's view (None outside git or without a
    commit); ``builtin``: the task is part of nestling, which a worker has imported already: never snapshotted."""

    root: Path
    files: tuple[str, ...]
    import_path: str
    module: str
    entry: str = ""  # the task's module file or package dir, relative to root
    commit: str | None = None
    dirty: bool | None = None
    in_git: bool = False
    builtin: bool = False

    def holds_task(self) -> bool:
        """Whether the files include the task's module (git may ignore it: then a snapshot could not import it)."""
        return any(f == self.entry or f.startswith(self.entry + "/") for f in self.files)


def locate(task_spec: str, run: Run = subprocess.run) -> CodeSource | None:
    """The code of the task `task_spec` (a --task value); None when its module cannot be found without importing
    it (a typo: planning reports it), or lives in no directory (a zip, a built-in module)."""
    module = task_module(task_spec)
    if not module:
        return None
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:  # a package (a namespace package: its first portion)
        package = Path(next(iter(spec.submodule_search_locations)))
        import_root, walk_root = package.parent, package
    elif spec.origin and os.path.isfile(spec.origin):
        module_file = Path(spec.origin)
        import_root, walk_root = module_file.parent, module_file
    else:
        return None
    if not walk_root.exists() or not import_root.is_dir():
        return None
    import_root, walk_root = import_root.resolve(), walk_root.resolve()
    builtin = top == NESTLING_PACKAGE
    work_root = git_toplevel(walk_root if walk_root.is_dir() else walk_root.parent, run)
    if work_root is None:
        files = _package_files(walk_root)
        return CodeSource(import_root, files, "", top, walk_root.relative_to(import_root).as_posix(), builtin=builtin)
    commit = _git_output(work_root, run, "rev-parse", "--verify", "-q", "HEAD")
    status = _git_output(work_root, run, "status", "--porcelain", "--untracked-files=normal")
    tracked = _git_paths(work_root, run, "ls-files", "-z", "--cached", "--recurse-submodules")
    untracked = _git_paths(work_root, run, "ls-files", "-z", "--others", "--exclude-standard")
    in_tree = sorted({p for p in (*tracked, *untracked) if not is_bytecode(p) and _is_file(work_root / p)})
    if import_root == work_root or work_root in import_root.parents:
        root, prefix = work_root, ""
    else:  # the package's git repo is the package itself (or a folder below the sys.path entry)
        root, prefix = import_root, work_root.relative_to(import_root).as_posix() + "/"
    return CodeSource(
        root=root,
        files=tuple(prefix + p for p in in_tree),
        import_path=import_root.relative_to(root).as_posix() if import_root != root else "",
        module=top,
        entry=walk_root.relative_to(root).as_posix(),
        commit=(commit or "").strip() or None,
        dirty=_dirty(status) if status is not None else None,
        in_git=True,
        builtin=builtin,
    )


def is_bytecode(path: str) -> bool:
    """Python's compiled files: written by every import of a tree whose .gitignore does not name them, they are
    never the task's code (a snapshot without them imports the same; a tree that only gained them did not change)."""
    return path.endswith((".pyc", ".pyo")) or "__pycache__" in path.split("/")


def _dirty(porcelain: str) -> bool:
    """Whether `git status --porcelain` lists a change other than bytecode ("XY path" or "XY from -> to")."""
    paths = (line[3:].split(" -> ")[-1].strip('"') for line in porcelain.splitlines() if line.strip())
    return any(not is_bytecode(path.rstrip("/")) for path in paths)


def git_toplevel(directory: Path, run: Run = subprocess.run) -> Path | None:
    """The root of the git work tree holding `directory`; None outside git, without git, or when git refuses the
    repository (e.g. another user's, "dubious ownership")."""
    out = _git_output(directory, run, "rev-parse", "--show-toplevel")
    return Path(out.strip()).resolve() if out and out.strip() else None


def _git_output(cwd: Path, run: Run, *args: str) -> str | None:
    """git's stdout, or None when it failed or is missing."""
    try:
        done = run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                   check=False, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _git_paths(cwd: Path, run: Run, *args: str) -> list[str]:
    out = _git_output(cwd, run, *args)
    return [p for p in (out or "").split("\0") if p]


def _is_file(path: Path) -> bool:
    """A regular file or a symbolic link (a submodule's directory entry and a deleted tracked file are not)."""
    return path.is_symlink() or path.is_file()


def _package_files(walk_root: Path) -> tuple[str, ...]:
    """Outside git: every file of the package directory, or the module and the .py files beside it; paths
    relative to the directory holding the package (the sys.path entry)."""
    base = walk_root.parent
    if walk_root.is_file():
        return tuple(sorted(p.name for p in base.glob("*.py") if _is_file(p)))
    found = []
    for dirpath, dirnames, filenames in os.walk(walk_root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or is_bytecode(name):
                continue
            found.append(Path(dirpath, name).relative_to(base).as_posix())
    return tuple(sorted(found))
