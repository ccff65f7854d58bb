"""A run dir is never shared by two live attempts: the attempt lock (nestling.core.tree.attempt_lock)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _reliability import FIGURES, SLEEP, cli, planned_runs, snapshot, write_tree

from nestling.core.tree.attempt_lock import STALE_S as LOCK_STALE_S
from nestling.core.tree.attempt_lock import alive as lock_alive
from nestling.execute import worker
from nestling.plan.store import load_spec


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[bytes]]:
    """A live process to hold a lock."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _lock(run: Path, **info: object) -> None:
    run.mkdir(parents=True, exist_ok=True)  # a run's dir is made when it starts
    (run / "attempt.lock").write_text(json.dumps(info))


def test_a_live_lock_keeps_a_second_worker_and_resume_away(
    tmp_path: Path, holder: subprocess.Popen[bytes]
) -> None:
    art = tmp_path / "art"
    root = write_tree("cv", [*SLEEP, "--n_folds", "2", "--max_epochs", "1", "--hp", "sleep_s=0",
                             "--artifact_dir", str(art), "--name", "held"])  # fmt: skip
    run = planned_runs(root)[0]["dir"]
    load_spec(run)  # the holding attempt made the run dir and its run_spec.json when it started
    _lock(run, pid=holder.pid, host=socket.gethostname(), hostname=socket.gethostname(), started="now")
    FIGURES.fault("second attempt on a locked run")
    before = snapshot(root)

    # a worker process (what a SLURM task or a local worker runs) does not train it, and touches nothing
    done = subprocess.run([sys.executable, "-m", "nestling.worker", str(run)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "a live attempt holds" in done.stderr
    assert snapshot(root) == before  # no result, no attempts.json, no logs, the lock unchanged

    # the serving worker (local launcher) replies "skipped" for it
    assert worker.run_dirs([str(run)]) == ["skipped"]
    assert snapshot(root) == before

    # resume refuses while the run is held, even though no launch.json exists (a killed local driver)
    refused = cli("cv", "--resume", "held", "--artifact_dir", str(art))
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "still running" in lines[0] and "'held'" in lines[0], refused.stderr
    assert snapshot(root) == before


def test_lock_liveness_rules(
    tmp_path: Path, holder: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    here = socket.gethostname()
    assert not lock_alive(run)  # no lock
    _lock(run, pid=holder.pid, hostname=here)
    assert lock_alive(run)  # a live process on this machine
    holder.kill()
    time.sleep(0.2)
    assert not lock_alive(run)  # ... which was SIGKILLed and is a zombie its parent has not reaped yet: stale
    holder.wait()
    assert not lock_alive(run)  # ... and gone
    _lock(run, pid=os.getpid(), hostname=here)
    assert not lock_alive(run)  # this very process: not another attempt
    (run / "attempt.lock").write_text("{half a lo")
    assert not lock_alive(run)  # unreadable
    _lock(run, pid=1, hostname="node-elsewhere")
    assert lock_alive(run)  # another machine, touched just now (heartbeat)
    old = time.time() - LOCK_STALE_S - 5
    os.utime(run / "attempt.lock", (old, old))
    assert not lock_alive(run)  # another machine, no heartbeat for LOCK_STALE_S: that node is gone
    _lock(run, pid=1, hostname="node-elsewhere", slurm_job_id="4242", slurm_restarts="0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert not lock_alive(run)  # this SLURM job's earlier incarnation (preempted, requeued): take it over
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    assert lock_alive(run)  # another job's fresh lock
