"""What a newcomer meets in the first hour (issue 16): Ctrl-C, failure reasons, tables, ranking, dry runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import poll

pytestmark = pytest.mark.e2e


def _results(root: Path) -> list[Path]:
    return list(root.glob("*/run_result.json"))


def test_ctrl_c_stops_a_local_sweep_and_leaves_it_resumable(tmp_path: Path) -> None:
    """A real SIGINT to the process group (a terminal's Ctrl-C): no more runs start, launch.json is written, the
    resume command is printed, exit 130 within seconds; status calls the unfinished runs interrupted."""
    args = [
        sys.executable, "-m", "nestling.cli", "cv", "--task", "sleep", "--hp", "sleep_s=2.0", "--max_epochs", "3",
        "--n_folds", "5", "--n_seeds", "1", "--accelerator", "cpu", "--name", "stopme",
        "--artifact_dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    root = tmp_path / "_cross_validations" / "stopme"
    try:
        # the first run is training (its attempt lock exists) and none has ended
        poll(lambda: list(root.glob("*/attempt.lock")), 90, "the first run to start")
        time.sleep(1.0)
        assert not _results(root)
        os.killpg(proc.pid, signal.SIGINT)
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, f"stdout:\n{out}\nstderr:\n{err}"
    assert took < 8, f"took {took:.1f} s to stop"
    assert "nestling cv --resume stopme" in err
    assert len(_results(root)) == 0  # the run in progress stopped, the other four never started
    launches = json.loads((root / "launch.json").read_text())["launches"]
    assert launches[-1]["interrupted"] is True
    assert not launches[-1].get("lost_runs")
    status = subprocess.run(
        [sys.executable, "-m", "nestling.cli", "status", str(root), "--json"], capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip
    states = [r["state"] for r in json.loads(status.stdout)["runs"]]
    assert states == ["interrupted"] * 5
    assert json.loads(status.stdout)["counts"]["interrupted"] == 5


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    """A worker that takes long to save (a slow epoch start) is killed by the second Ctrl-C."""
    args = [
        sys.executable, "-m", "nestling.cli", "cv", "--task", "sleep", "--hp", "sleep_s=30.0", "--max_epochs", "1",
        "--n_folds", "2", "--n_seeds", "1", "--accelerator", "cpu", "--name", "stopnow",
        "--artifact_dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    root = tmp_path / "_cross_validations" / "stopnow"
    try:
        poll(lambda: list(root.glob("*/attempt.lock")), 90, "the first run to start")
        # ignore the preemption signal in the worker, so only the second Ctrl-C can stop it
        lock = json.loads(next(root.glob("*/attempt.lock")).read_text())
        os.kill(lock["pid"], signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None  # the first Ctrl-C waits for the worker to save
        os.killpg(proc.pid, signal.SIGINT)
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, f"stdout:\n{out}\nstderr:\n{err}"
    assert took < 8
    launches = json.loads((root / "launch.json").read_text())["launches"]
    assert launches[-1]["interrupted"] is True
