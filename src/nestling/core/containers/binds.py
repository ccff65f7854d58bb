"""What is bound into the image and where the worker starts: the artifact and data dirs, the host's Python for
"bring your own python" images, the working directory.

Binds are :class:`Bind` values with a resolved source and the destination the worker uses: a symlinked directory
is bound from where it points at the path the user or the task gave, so that path exists inside.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nestling.core.containers.options import Bind


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def same_inside(path: str, bind: Bind) -> bool:
    """Whether ``path`` (absolute) is visible inside at the same path with the host's content: it lies under the
    bind's destination, and on the host that destination leads to the bind's source."""
    return _under(path, bind.dst) and os.path.realpath(bind.dst) == bind.src


def worker_python(binds: Sequence[Bind], executable: str | None = None) -> str:
    """The interpreter a worker runs with inside the image.

    The host's own ``sys.executable`` when a declared bind puts it at the same path inside (the test image and
    "bring your own python" images, see :func:`host_python_binds`); otherwise the image's ``python`` (the launch
    probes the image once and takes ``python3`` when that is all it has, see image.py).
    """
    exe = executable or sys.executable
    path = os.path.normpath(os.path.abspath(exe))
    return exe if any(same_inside(path, b) for b in binds) else "python"


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
        if p == "/" or ":" in p or any(_under(p, c) for c in chosen):
            continue
        chosen.append(p)
    return [f"{p}:{p}:ro" for p in chosen]


def auto_binds(artifact_dir: Path | str, data_dirs: Sequence[str | Path]) -> tuple[list[Bind], list[str]]:
    """(what nestling binds read-write, the data dirs that do not exist): the artifact dir at its resolved path
    (every path of a plan is resolved), then each data dir of the task from where it points, at the path the
    task gave, unless a bind already shows it there."""
    art = os.path.realpath(artifact_dir)
    binds = [Bind(art, art)]
    missing: list[str] = []
    for d in data_dirs:
        given = os.path.normpath(os.path.abspath(d))
        if not os.path.exists(given):
            missing.append(str(d))
        elif not any(same_inside(given, b) and os.path.realpath(given) == _source_of(given, b) for b in binds):
            binds.append(Bind(os.path.realpath(given), given))
    return binds, missing


def _source_of(path: str, bind: Bind) -> str:
    """Where ``path`` inside (under ``bind.dst``) comes from on the host."""
    return os.path.normpath(os.path.join(bind.src, os.path.relpath(path, bind.dst)))


def worker_dir(cwd: str, binds: Sequence[Bind]) -> str:
    """Where the worker starts inside the image: a directory that exists there whatever the runtime.

    The submitting directory when a bind shows it at the same path (``python -m`` then keeps a task module that
    lives there importable); otherwise the artifact dir (``binds[0]``, nestling's first auto bind), which always
    is. Podman refuses to start in a directory the image lacks (``workdir ... does not exist on container``), and
    the code may well be baked into the image with nothing of the submitting directory bound. Run dirs, specs and
    splits files hold absolute paths (preflight resolves the artifact dir), so nothing depends on which it is.
    """
    here = os.path.realpath(cwd)
    if any(same_inside(here, b) for b in binds):
        return here
    return binds[0].dst


def task_data_dirs(task: Any) -> list[str | Path]:
    """The task's optional ``data_dirs()`` (directories its data lives in), [] when it has none."""
    data_dirs = getattr(task, "data_dirs", None) if task is not None else None
    return list(data_dirs()) if callable(data_dirs) else []
