"""The attempt lock of a run dir (`attempt.lock`): a run dir is never shared by two live attempts.

One owner for the whole protocol: creating the lock (execute/run_attempt.py), touching it while the run trains, telling a live
holder from a dead one (read/run_states.py, commands/resume.py), releasing it, removing a stale one.

A lock is a small JSON file: pid, host, hostname, SLURM job id and restart count, start time. Its holder is alive
when, written on this machine, its pid is alive; written elsewhere (another node, another container), its holder
touched it within STALE_S. A lock from this SLURM job's earlier incarnation is dead: SLURM never runs two
incarnations of one job at once, so a requeued task takes over its own lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from nestling.core.host.jobenv import JobEnvironment
from nestling.core.tree.atomic import create_exclusive as _create_exclusive
from nestling.core.tree.atomic import write_json
from nestling.core.tree.clock import utc_now
from nestling.core.tree.naming import RunPaths

log = logging.getLogger("nestling.core.tree.attempt_lock")

HEARTBEAT_S = 30  # a live attempt touches its lock this often ...
STALE_S = 120  # ... so a lock untouched for this long belongs to an attempt that is gone


def info(host: str) -> dict[str, Any]:
    """What a lock says about its holder: enough to tell, from any machine, whether it is still alive."""
    job = JobEnvironment.from_environ()
    return {
        "pid": os.getpid(),
        "host": host,
        "hostname": socket.gethostname(),
        "slurm_job_id": job.job_id,
        "slurm_restarts": str(job.restart_count),
        "started": utc_now(),
    }


def acquire(paths: RunPaths, host: str) -> bool:
    """Create attempt.lock exclusively (hard link of a complete file: readers never see half a lock).

    An existing lock whose holder is alive wins (False); a stale one is removed and the creation retried.
    """
    payload = json.dumps(info(host))
    for _ in range(3):
        if _create_exclusive(paths.lock, payload):
            return True
        if alive(paths.dir):
            return False
        log.warning("taking over %s: its attempt is gone", paths.lock)
        with contextlib.suppress(FileNotFoundError):
            paths.lock.unlink()
    return False


def mark(paths: RunPaths, host: str) -> None:
    """Write the lock without the exclusive create: a multi-task job's rank 0, whose job SLURM keeps unique."""
    write_json(paths.lock, info(host))


def release(paths: RunPaths) -> None:
    """Remove the lock if it is still this process's (never one a later attempt took over)."""
    try:
        held = json.loads(paths.lock.read_text())
    except (FileNotFoundError, ValueError):
        return
    if (
        isinstance(held, dict)
        and held.get("pid") == os.getpid()
        and held.get("hostname") == socket.gethostname()
    ):
        paths.lock.unlink(missing_ok=True)


class Heartbeat:
    """Touches the lock while the run trains, so other machines can tell a live attempt from a dead one."""

    def __init__(self, lock: Path) -> None:
        self.lock = lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="nestling-lock-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.lock)


def alive(run_dir: Path) -> bool:
    """Is the attempt lock of this run held by a live attempt?

    Written on this machine (same hostname, so same pid namespace): its pid is alive. Written by this SLURM job's
    earlier incarnation: no (SLURM never runs two incarnations of one job at once, so a requeued task takes over
    its own lock). Elsewhere (another node, another container): its holder touched it within STALE_S.
    """
    lock = RunPaths(run_dir).lock
    try:
        held = json.loads(lock.read_text())
        touched = lock.stat().st_mtime
    except (FileNotFoundError, ValueError):
        return False
    if not isinstance(held, dict):
        return False
    job = JobEnvironment.from_environ()
    holder_job = str(held.get("slurm_job_id") or "")
    restarted = _as_count(held.get("slurm_restarts")) < job.restart_count
    if holder_job and holder_job == job.job_id and restarted:
        return False
    if held.get("hostname") == socket.gethostname():  # same machine and pid namespace (not another container)
        try:
            pid = int(held["pid"])
        except (ValueError, KeyError, TypeError):
            return False
        return pid != os.getpid() and pid_alive(pid)  # this process's own lock is no other attempt
    return time.time() - touched < STALE_S


def remove_if_stale(run_dir: Path) -> None:
    """Remove a lock left by a killed attempt, checked dead here (this host can see its pid), so that a rerun on
    another machine, which could not check it, does not wait for it."""
    lock = RunPaths(run_dir).lock
    if lock.exists() and not alive(run_dir):
        lock.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """A running process; a zombie (killed, not yet reaped by its parent) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust the signal
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _as_count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
