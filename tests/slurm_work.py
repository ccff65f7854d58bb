"""SLURM work submitted as soon as the test run brings the cluster up, checked by its tests later (tests/README.md).

Training on the local cluster is mostly waiting: for sbatch, for SLURM's scheduler, for torch to import in each
array task. So a test module registers its SLURM work here at import (`plan` for one nestling command, `register`
for anything else), and its tests name it with `@pytest.mark.slurm_work("name")`. The `slurm_work` fixture
(tests/conftest.py) starts the work of every selected test when the first of them runs: work of order 0 first,
queued before anything else starts (so SLURM hands it the GPUs and CPUs it needs at once), then the rest together;
a test then waits for its own work and checks the tree, while the rest runs on.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from support import poll


class Handle(Protocol):
    def queued(self) -> bool: ...  # the work's jobs are in SLURM's queue (or it ended): the next may start

    def stop(self, env: dict[str, str]) -> None: ...  # end of the session: stop what still runs, cancel its jobs


@dataclass(frozen=True)
class Work:
    name: str
    order: int
    start: Callable[[Path, dict[str, str]], Handle]  # (its own dir, the cluster's environment) -> a handle


WORK: dict[str, Work] = {}


def register(name: str, order: int, start: Callable[[Path, dict[str, str]], Handle]) -> str:
    """Register SLURM work (at import, by the module whose tests check it); returns its name for the marker."""
    WORK[name] = Work(name, order, start)
    return name


class Background:
    """A nestling command in a process of its own, output to files (never a pipe that could fill up); the moment
    it ended is recorded by a thread waiting on it, for tests that check what existed when it returned."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.stdout, self.stderr = log_dir / "stdout.txt", log_dir / "stderr.txt"
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "nestling.cli", *args], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=env)  # fmt: skip
        self.ended_at: float | None = None  # time.time() when the process ended
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        self.proc.wait()
        self.ended_at = time.time()

    def done(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Wait for the command to end (fail the test after `timeout` seconds); what it printed and its exit code."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"nestling {' '.join(self.args)} did not end within {timeout:.0f} s:\n"
                        f"{self.stdout.read_text()}\n{self.stderr.read_text()}")  # fmt: skip
        self._watcher.join()
        return subprocess.CompletedProcess(self.args, self.proc.returncode, self.stdout.read_text(),
                                           self.stderr.read_text())  # fmt: skip

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Command:
    """The handle of a `plan`: one nestling command (`name`: its --name), its artifact dir and plan dir."""

    name: str
    art: Path
    root: Path
    command: Background

    def done(self, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.command.done(timeout)

    def queued(self) -> bool:
        """launch.json is written once the jobs are submitted (a run's is in its run dir, below `_runs`)."""
        launched = (self.root / "launch.json").is_file() or any(self.root.glob("*/launch.json"))
        return launched or self.command.proc.poll() is not None

    def stop(self, env: dict[str, str]) -> None:
        self.command.kill()
        prefix = f"nestling-{self.name}"
        out = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, env=env, timeout=30,
                             check=False).stdout  # fmt: skip
        jobs = [line.split("|", 1) for line in out.split() if "|" in line]
        ours = [job for job, name in jobs if name == prefix or name.startswith(f"{prefix}-")]
        if ours:
            subprocess.run(["scancel", *ours], capture_output=True, env=env, timeout=30, check=False)


def plan(
    name: str, order: int, argv: Callable[[Path], list[str]], root: Callable[[Path], Path],
    env: Callable[[Path], dict[str, str]] = lambda base: {},
) -> str:  # fmt: skip
    """Register one nestling command (`argv(artifact dir)`, with a --name; WANDB_MODE=offline, plus `env(its own
    dir)`) whose plan dir is `root(artifact dir)`; its handle is a `Command`."""

    def start(base: Path, cluster_env: dict[str, str]) -> Command:
        base.mkdir(parents=True, exist_ok=True)
        art = base / "art"
        args = argv(art)
        full = {**cluster_env, "WANDB_MODE": "offline", **env(base)}
        return Command(args[args.index("--name") + 1], art, root(art), Background(args, full, base))

    return register(name, order, start)


def selected(items: list[pytest.Item]) -> list[str]:
    """The work the selected tests name with @pytest.mark.slurm_work."""
    return sorted({name for item in items for mark in item.iter_markers("slurm_work") for name in mark.args})


def start(names: list[str], base: Path, env: dict[str, str]) -> dict[str, Any]:
    """Start the named work in its order; work of order 0 is queued before anything else starts (it needs the
    cluster's resources at once), the rest starts together. name -> handle."""
    handles: dict[str, Any] = {}
    for work in sorted((WORK[n] for n in names), key=lambda w: (w.order, w.name)):
        handles[work.name] = handle = work.start(base / work.name, env)
        if work.order == 0:
            poll(handle.queued, 120, f"SLURM work {work.name!r} to be queued")
    return handles


def stop(handles: dict[str, Any], env: dict[str, str]) -> None:
    for handle in handles.values():
        handle.stop(env)
