"""What is bound into the image and where the worker starts: the artifact and data dirs, the host's Python for
"bring your own python" images, the working directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.containers.options import ContainerOptions, parse_bind

if TYPE_CHECKING:
    pass


def worker_python(opts: ContainerOptions, executable: str | None = None) -> str:
    """The interpreter a worker runs with inside the image.

    The host's own ``sys.executable`` when a declared bind puts it at the same path inside (the test image and
    "bring your own python" images, see :func:`host_python_binds`); otherwise the image's ``python``.
    """
    exe = os.path.normpath(os.path.abspath(executable or sys.executable))
    for spec in opts.binds:
        bind = parse_bind(spec)
        src, dst = os.path.normpath(bind.src), os.path.normpath(bind.dst)
        if src == dst and (exe == dst or exe.startswith(dst.rstrip("/") + "/")):
            return executable or sys.executable
    return "python"


def host_python_binds() -> list[str]:
    """Read-only binds that let a minimal image run *this* host interpreter, venv and import path.

    For test images (containers/test-image) and "bring your own python" images: the system library dirs
    (for the dynamic loader and libc), the Python install (``sys.base_prefix`` and the real directory of
    ``sys.executable``), the venv (``sys.prefix``) and every directory on ``sys.path``. Each is bound at its
    host path, so ``sys.executable`` works unchanged inside; PYTHONPATH still has to be passed as env.
    """
    system = [p for p in ("/usr", "/lib", "/lib64", "/etc/ld.so.cache") if os.path.exists(p)]
    python: list[str] = [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))]
    python += [os.path.dirname(os.path.abspath(sys.executable))]
    python += [p for p in sys.path if p and os.path.isabs(p)]
    candidates: list[str] = []
    for p in python:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if os.path.exists(q) and q not in candidates:
                candidates.append(q)
    chosen: list[str] = list(system)
    for p in sorted(candidates, key=len):
        if p == "/" or ":" in p or any(p == c or p.startswith(c.rstrip("/") + "/") for c in chosen):
            continue
        chosen.append(p)
    return [f"{p}:{p}:ro" for p in chosen]


def auto_binds(artifact_dir: Path | str, data_dirs: Sequence[str | Path]) -> tuple[list[str], list[str]]:
    """(what to bind at the same path, the data dirs that do not exist): the artifact dir, then each data dir
    not already inside a bind."""
    binds = [str(Path(artifact_dir).resolve())]
    missing: list[str] = []
    for d in data_dirs:
        path = Path(d).resolve()
        if not path.exists():
            missing.append(str(d))
        elif not any(path == Path(b) or Path(b) in path.parents for b in binds):
            binds.append(str(path))
    return binds, missing


def worker_dir(cwd: str, binds: Sequence[str], auto: Sequence[str]) -> str:
    """Where the worker starts inside the image: a directory that exists there whatever the runtime.

    The submitting directory when a bind puts it at the same path (``python -m`` then keeps a task module that
    lives there importable); otherwise the artifact dir (``auto[0]``), which is always bound. Podman refuses to
    start in a directory the image lacks (``workdir ... does not exist on container``), and the code may well be
    baked into the image with nothing of the submitting directory bound. Run dirs, specs and splits files hold
    absolute paths (preflight resolves the artifact dir), so nothing depends on which of the two it is.
    """
    here = Path(cwd).resolve()
    same_path = [Path(b) for b in auto]
    for spec in binds:
        bind = parse_bind(spec)
        if os.path.normpath(bind.src) == os.path.normpath(bind.dst):
            same_path.append(Path(bind.src).resolve())
    if any(here == b or b in here.parents for b in same_path):
        return str(here)
    return str(auto[0])


def task_data_dirs(task: Any) -> list[str | Path]:
    """The task's optional ``data_dirs()`` (directories its data lives in), [] when it has none."""
    data_dirs = getattr(task, "data_dirs", None) if task is not None else None
    return list(data_dirs()) if callable(data_dirs) else []
