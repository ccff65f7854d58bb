"""The pid file of a detached sweep's supervisor (core/tree/supervisor_pid.py): exclusive claim, liveness, stale files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nestling.core.tree import naming
from nestling.core.tree import supervisor_pid as supervision


def _write(root: Path, **fields: object) -> None:
    naming.SupervisorPaths(root).pid.write_text(json.dumps({"written": 0.0, **fields}))


def test_one_claim_wins_until_its_holder_is_gone(tmp_path: Path) -> None:
    assert supervision.claim_supervision(tmp_path)
    held = supervision.live_supervisor(tmp_path)
    assert held is not None and held.pid == os.getpid() and held.here
    assert not supervision.claim_supervision(tmp_path)  # a live holder: a second --detach is refused

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    supervision.hand_over(tmp_path, dead.pid)  # the supervisor it names has ended
    assert supervision.read_supervisor(tmp_path) is not None and supervision.live_supervisor(tmp_path) is None
    assert supervision.claim_supervision(tmp_path)  # the stale file is replaced
    assert supervision.read_supervisor(tmp_path).pid == os.getpid()  # type: ignore[union-attr]


def test_a_reused_pid_is_not_the_supervisor(tmp_path: Path) -> None:
    import socket

    _write(tmp_path, pid=os.getpid(), hostname=socket.gethostname(), start_ticks="1")  # another process's start
    if supervision._start_ticks(os.getpid()) is not None:  # /proc available: the start time tells them apart
        assert supervision.live_supervisor(tmp_path) is None


def test_another_machines_supervisor_counts_as_alive(tmp_path: Path) -> None:
    _write(tmp_path, pid=1, hostname="some-other-node", start_ticks=None)
    sup = supervision.live_supervisor(tmp_path)
    assert sup is not None and not sup.here and sup.describe() == "pid 1 on some-other-node"
    assert not supervision.claim_supervision(tmp_path)


def test_release_removes_only_its_own_file(tmp_path: Path) -> None:
    supervision.hand_over(tmp_path, 12345)
    supervision.release_supervision(tmp_path)  # not this process's
    assert naming.SupervisorPaths(tmp_path).pid.exists()
    supervision.release_supervision(tmp_path, pid=12345)
    assert not naming.SupervisorPaths(tmp_path).pid.exists()
    assert supervision.read_supervisor(tmp_path) is None
