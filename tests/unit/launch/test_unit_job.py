"""UnitJob (what submitit-local pickles) runs its unit in a worker child and hands preemption to that child."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import submitit
from support import poll

from nestling.launch import entry


def test_unit_job_runs_the_worker_as_a_child_and_forwards_preemption(tmp_path: Path) -> None:
    """UnitJob never imports the training code: it starts `python -m nestling.worker`; on checkpoint the worker
    gets the preemption signal (it saves and exits 75) and the job resubmits itself with the same unit."""
    assert entry.unit_command(["/r/a", "/r/b"]).argv == [sys.executable, "-m", "nestling.worker", "/r/a", "/r/b"]
    ready = tmp_path / "ready"
    child = textwrap.dedent(f"""
        import pathlib, signal, sys, time
        signal.signal(signal.SIGUSR2, lambda *_: sys.exit(75))
        pathlib.Path({str(ready)!r}).write_text("1")
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child])
    entry._CHILD["proc"] = proc
    try:
        poll(ready.exists, 20, "the worker stand-in to install its signal handler", interval=0.05)
        resubmit = entry.UnitJob().checkpoint(["/r/a"], None)
    finally:
        entry._CHILD.pop("proc", None)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75
    assert isinstance(resubmit, submitit.helpers.DelayedSubmission)
    assert resubmit.args == (["/r/a"], None)
