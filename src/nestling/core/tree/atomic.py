"""Atomic writes: a temporary file in the same directory, then a rename, so a reader never sees half a file.

Every temporary file or directory nestling creates gets the mode a plain `open()` or `mkdir` would give it: the
process's umask decides (0644 / 0755 under umask 022), not tempfile's private 0600 / 0700. A tree on a shared
project directory is then as readable as the checkpoints and logs Lightning writes beside it (issue 21 #3).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

FILE_MODE = 0o666  # what open() asks for; the umask takes away the rest
DIR_MODE = 0o777
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status, kernel 4.7+).

    Elsewhere it is set and restored under a lock: os.umask is the only portable reader, and it changes the mask of
    every thread for a moment."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from open() under the current umask."""
    return FILE_MODE & ~current_umask()


def temporary_file(directory: Path, prefix: str, suffix: str = "") -> tuple[int, str]:
    """`tempfile.mkstemp` in `directory`, with the mode open() would give (mkstemp's own is 0600): (fd, path)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    try:
        os.fchmod(fd, file_mode())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def unique_dir(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A new directory with a unique name in `parent` (`tempfile.mkdtemp`), with the mode mkdir would give."""
    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    path.chmod(DIR_MODE & ~current_umask())
    return path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file and a rename (atomic on POSIX file systems)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = temporary_file(path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any, compact: bool = False) -> None:
    """`compact` for the files that grow with the plan (plan.json, units.json, launch.json): json's C encoder runs
    only without indent, and is about 5x faster on 10,000 runs."""
    write_atomic(path, json.dumps(obj, indent=None if compact else 1, default=str) + "\n")


def create_exclusive(path: Path, payload: str) -> bool:
    """Create `path` holding `payload` unless it exists (False then): a hard link of a complete temporary file, so
    the first creator wins and no reader ever sees the file empty (locks, decisions)."""
    path = Path(path)
    fd, tmp = temporary_file(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(payload)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except (
            OSError
        ):  # a file system without hard links: exclusive create (a reader may see it empty briefly)
            try:
                with open(path, "x") as f:
                    f.write(payload)
                return True
            except FileExistsError:
                return False
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
