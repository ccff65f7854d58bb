"""A worker's stop on the preemption signal (jobenv.stop_on, training.on_preemption), in real processes with real
signals: one save however often the signal comes (SLURM's own plus the one the array task forwards through the
runtime, issue 26 #4), and the other ranks of a multi-task job wait for rank 0 while their training goes on.
The same path with a real SLURM USR2 and real podman containers: tests/integration/test_container_signals.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import poll

from nestling.core.host.jobenv import EXIT_REQUEUED
from nestling.core.tree.naming import RunPaths

CHILD = """
import os, signal, sys, time
from pathlib import Path
from nestling.core.host import jobenv
from nestling.core.tree.naming import RunPaths
from nestling.execute import training

out, rank0_saver = Path(sys.argv[1]), sys.argv[2] == "save"
count = [0]

def save():
    count[0] += 1
    (out / f"save-{count[0]}").write_text(str(os.getpid()))
    time.sleep(1.0)  # a save takes time: the second delivery arrives meanwhile

def saver():
    return save() if rank0_saver else training.on_preemption(None, RunPaths(out))

jobenv.stop_on([signal.SIGUSR2, signal.SIGTERM])
with jobenv.on_preempt(saver):
    (out / "ready").write_text("1")
    tick = 0
    while True:  # training: the main thread keeps going unless the handler stops it
        tick += 1
        (out / "ticks").write_text(str(tick))
        time.sleep(0.02)
"""


def start(tmp_path: Path, mode: str, env: dict[str, str], **kw: object) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), mode], env={**os.environ, **env}, **kw)  # type: ignore[call-overload]
    poll((tmp_path / "ready").exists, 60, "the worker stand-in to install its handler", interval=0.05)
    return proc


def test_rank_0_saves_once_however_often_the_signal_comes(tmp_path: Path) -> None:
    proc = start(tmp_path, "save", {}, stderr=subprocess.PIPE)
    try:
        proc.send_signal(signal.SIGUSR2)  # SLURM's
        poll((tmp_path / "save-1").exists, 20, "the save to start", interval=0.02)
        proc.send_signal(signal.SIGUSR2)  # the array task's, forwarded through the runtime
        proc.send_signal(signal.SIGTERM)  # scancel / the requeue's kill, in an image
        assert proc.wait(timeout=30) == EXIT_REQUEUED
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
    assert sorted(p.name for p in tmp_path.glob("save-*")) == ["save-1"]
    assert "SIGUSR2 again while stopping" in err and "SIGTERM again while stopping" in err


def test_other_ranks_train_on_until_rank_0_saved(tmp_path: Path) -> None:
    rank1 = {"SLURM_JOB_ID": "9", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
    proc = start(tmp_path, "wait", rank1)
    try:
        proc.send_signal(signal.SIGUSR2)
        proc.send_signal(signal.SIGUSR2)
        before = int((tmp_path / "ticks").read_text())
        time.sleep(1.5)  # rank 0 has not saved yet: this rank must neither stop nor stop training
        assert proc.poll() is None
        assert int((tmp_path / "ticks").read_text()) > before + 10
        marker = RunPaths(tmp_path).preempt_marker("9-r0")  # what rank 0 writes once it saved
        marker.write_text('{"rank": 0}')
        assert proc.wait(timeout=20) == EXIT_REQUEUED
    finally:
        proc.kill()
