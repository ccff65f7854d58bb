"""How much the file system of a path holds: free bytes and inodes (os.statvfs), the user's quota where `lfs quota`
or `quota` answers, and the one line that names a full file system.

HPC sites cap bytes and files per account (a million inodes is common); a 10,000-run tune writes ~15 files a run.
Quota tools are asked with a bounded timeout and never raise: no answer means no quota known, never zero room.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nestling.core.host.processes import Run

QUOTA_TIMEOUT_S = 10


@dataclass(frozen=True)
class Room:
    """What can still be written below a path: bytes and files (inodes), each the least of the file system's free
    space and the quota's headroom; None where nothing limits it."""

    path: Path  # the directory asked about (the nearest existing one)
    mount: Path  # the mount point of its file system
    free_bytes: int
    total_bytes: int
    free_files: int | None  # None: the file system does not count inodes (f_files 0, e.g. some network mounts)
    total_files: int | None
    quota: str | None = None  # "lfs quota" / "quota" when a quota is the tighter bound

    def describe(self) -> str:
        """`1.2 GB free of 50 GB, 300 of 1,000,000 inodes free on /scratch (quota)`."""
        files = ""
        if self.free_files is not None and self.total_files is not None:
            files = f", {self.free_files:,} of {self.total_files:,} inodes free"
        why = f" ({self.quota})" if self.quota else ""
        return f"{human_bytes(self.free_bytes)} free of {human_bytes(self.total_bytes)}{files} on {self.mount}{why}"


@dataclass(frozen=True)
class Quota:
    """A user's quota on one file system: bytes and files used, and the limit of each (None: no limit)."""

    used_bytes: int
    limit_bytes: int | None
    used_files: int
    limit_files: int | None


def existing_dir(path: Path) -> Path:
    """`path`, or its nearest parent that exists (a plan's dir does not exist before it is written)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return Path("/")


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding `path` (where the device number changes going up)."""
    path = existing_dir(path).resolve()
    device = os.stat(path).st_dev
    while path != path.parent and os.stat(path.parent).st_dev == device:
        path = path.parent
    return path


def room(path: Path, quotas: bool = True, run: Run | None = None) -> Room:
    """The room below `path`: statvfs, tightened by the user's quota when one answers (`quotas`)."""
    here = existing_dir(path)
    st = os.statvfs(here)
    free_bytes, total_bytes = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    counted = st.f_files > 0
    free_files, total_files = (st.f_favail, st.f_files) if counted else (None, None)
    mount = mount_point(here)
    found = user_quota(mount, run) if quotas else None
    if found is None:
        return Room(here, mount, free_bytes, total_bytes, free_files, total_files)
    tool, quota = found
    name = None
    if quota.limit_bytes is not None and quota.limit_bytes - quota.used_bytes < free_bytes:
        free_bytes, total_bytes, name = max(0, quota.limit_bytes - quota.used_bytes), quota.limit_bytes, tool
    if quota.limit_files is not None and (free_files is None or quota.limit_files - quota.used_files < free_files):
        free_files, total_files, name = max(0, quota.limit_files - quota.used_files), quota.limit_files, tool
    return Room(here, mount, free_bytes, total_bytes, free_files, total_files, name)


def user_quota(mount: Path, run: Run | None = None) -> tuple[str, Quota] | None:
    """The user's quota on the file system mounted at `mount`: `lfs quota` on Lustre, else `quota`; None when
    neither is installed or answers."""
    user = getpass.getuser()
    asks = [("lfs quota", ["lfs", "quota", "-q", "-u", user, str(mount)]),
            ("quota", ["quota", "-w", "-p", "-u", user, "-f", str(mount)])]  # fmt: skip
    for name, argv in asks:
        if run is None and shutil.which(argv[0]) is None:
            continue
        try:
            done = (run or subprocess.run)(argv, capture_output=True, text=True, timeout=QUOTA_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        quota = parse_quota(done.stdout or "") if done.returncode in (0, 1) else None  # quota exits 1 when over
        if quota is not None:
            return name, quota
    return None


def parse_quota(text: str) -> Quota | None:
    """The data row of `lfs quota -q` or `quota -w -p` (both: FS, KiB used, soft, hard, grace, files used, soft,
    hard, grace; `*` marks a value over its limit). The hard limit counts, else the soft one; 0 means none."""
    for line in text.splitlines():
        tokens = line.split()
        numbers = [t.rstrip("*") for t in tokens[1:]]
        if len(numbers) < 7 or not all(n.isdigit() for n in (numbers[0], numbers[1], numbers[2])):
            continue
        files_at = 4 if len(numbers) >= 8 else 3  # a grace column printed, or left empty
        if not all(n.isdigit() for n in numbers[files_at : files_at + 3]):
            continue
        kib, soft, hard = (int(n) for n in numbers[0:3])
        files, fsoft, fhard = (int(n) for n in numbers[files_at : files_at + 3])
        limit = hard or soft
        flimit = fhard or fsoft
        return Quota(kib * 1024, limit * 1024 if limit else None, files, flimit or None)
    return None


def human_bytes(n: float) -> str:
    """1536 -> `1.5 KB` (powers of 1024, as df -h)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"
