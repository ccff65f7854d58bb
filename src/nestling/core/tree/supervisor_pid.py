"""The supervisor of a detached local sweep (`--detach`): who it is, whether it is alive, how it is stopped.

One small JSON file at the plan root, `_supervisor.pid` (naming.SupervisorPaths): pid, hostname, the process's
start time, when it was written. Like an attempt lock (attempt_lock.py) its holder is alive when, written on this
machine, its pid is alive and is the same process (same start time, so a reused pid is not mistaken for it);
written on another machine it cannot be checked from here and counts as alive (a second supervisor is refused
rather than risked). The foreground claims the file exclusively before it starts the supervisor, so two
`--detach` on one tree cannot both start one; the supervisor removes it when it ends.

Stopping sends SIGINT to the supervisor's process group: what Ctrl-C sends to a foreground sweep, so a detached
sweep stops exactly as an attached one does (runs in progress save their resume point; `--resume` continues).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from nestling.core.tree.atomic import temporary_file, write_json
from nestling.core.tree.attempt_lock import pid_alive
from nestling.core.tree.naming import SupervisorPaths

STOP_SIGNAL = signal.SIGINT  # what a terminal's Ctrl-C sends; the local launcher's graceful stop


@dataclass(frozen=True)
class Supervisor:
    pid: int
    hostname: str
    start_ticks: str | None  # /proc/PID/stat start time: tells the process from a later one with its pid
    written: float

    @property
    def here(self) -> bool:
        """On this machine (same pid namespace): its liveness can be checked and it can be signalled."""
        return self.hostname == socket.gethostname()

    def describe(self) -> str:
        return f"pid {self.pid} on {self.hostname}"


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # no /proc (macOS) or no such process
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat; fields[0] is field 3


def _payload(pid: int) -> dict[str, object]:
    return {"pid": pid, "hostname": socket.gethostname(), "start_ticks": _start_ticks(pid), "written": time.time()}


def read_supervisor(root: Path) -> Supervisor | None:
    """The supervisor the pid file names, alive or not; None without a (readable) pid file."""
    try:
        data = json.loads(SupervisorPaths(root).pid.read_text())
        return Supervisor(int(data["pid"]), str(data["hostname"]), data.get("start_ticks"), float(data["written"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_alive(sup: Supervisor) -> bool:
    if not sup.here:
        return True  # cannot be checked from another machine
    if not pid_alive(sup.pid):
        return False
    now = _start_ticks(sup.pid)
    return sup.start_ticks is None or now is None or now == sup.start_ticks


def live_supervisor(root: Path) -> Supervisor | None:
    """The live supervisor of the plan at `root`, or None."""
    sup = read_supervisor(root)
    return sup if sup is not None and is_alive(sup) else None


def claim_supervision(root: Path) -> bool:
    """Create the pid file naming this process, exclusively; False when a live supervisor holds it (a dead one's
    file is removed and the claim retried)."""
    path = SupervisorPaths(root).pid
    for _ in range(3):
        fd, tmp = temporary_file(path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(_payload(os.getpid()), f)
            os.link(tmp, path)  # exclusive: fails when the file exists
            return True
        except FileExistsError:
            if live_supervisor(root) is not None:
                return False
            path.unlink(missing_ok=True)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return False


def hand_over(root: Path, pid: int) -> None:
    """The claimant started the supervisor: the pid file names it from now on."""
    write_json(SupervisorPaths(root).pid, _payload(pid))


def release_supervision(root: Path, pid: int | None = None) -> None:
    """Remove the pid file if it names `pid` (default: this process), never a later supervisor's."""
    sup = read_supervisor(root)
    if sup is not None and sup.here and sup.pid == (os.getpid() if pid is None else pid):
        SupervisorPaths(root).pid.unlink(missing_ok=True)


def signal_stop(sup: Supervisor, sig: int = STOP_SIGNAL) -> None:
    """Send `sig` to the supervisor's process group (it leads its own session: the group is it and its workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sup.pid, sig)
