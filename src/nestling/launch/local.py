"""The local launcher: a pool of long-lived worker processes, each pinned to its device(s).

Each worker imports torch once and runs many work units (`python -m nestling.worker --serve`). A worker that dies
(SIGKILL, out of memory) costs only the run it was training: that run stays without a result (lost), the runs of
its unit that had not started go back to the queue, a fresh worker takes them, and the rest of the plan completes.

Ctrl-C (SIGINT to the terminal's process group, workers included; they ignore it): the first one stops handing
out units and sends each worker the preemption signal, so the run in progress leaves its resume point and the
worker exits; the record says `interrupted` and its unfinished runs are resumable, not lost. A second Ctrl-C
kills the workers at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nestling import jobenv, naming
from nestling.launch.base import Launcher, Progress, count_runs
from nestling.plan import WorkUnit
from nestling.records import LaunchRecord

if TYPE_CHECKING:
    from nestling.container import ContainerSpec

LOST = "lost"


class LocalLauncher(Launcher):
    name = "local"

    def __init__(
        self,
        slots: Sequence[list[str] | None],
        *,
        container: ContainerSpec | None = None,
    ) -> None:
        """`slots`: one entry per worker, its GPU ids or None (CPU). With `container` each worker runs in that
        image, taking from its host environment only what the spec lets in."""
        self.slots = list(slots) or [None]
        self.container = container
        self._stop = threading.Event()  # the first Ctrl-C: hand out no more units
        self._procs: dict[int, subprocess.Popen[str]] = {}  # live workers by slot, for the Ctrl-C handler
        self._interrupts = 0

    @property
    def parallel_slots(self) -> int:
        return len(self.slots)

    def describe(self, root: Path, units: list[WorkUnit], title: str) -> str:
        return f"dry run: {title}: {count_runs(units)} runs in {len(units)} work units on the local launcher"

    def launch(self, root: Path, units: list[WorkUnit], progress: Progress) -> LaunchRecord:
        log_dir = naming.worker_log_dir(root)
        log_dir.mkdir(parents=True, exist_ok=True)
        todo: queue.Queue[WorkUnit] = queue.Queue()
        for unit in units:
            todo.put(unit)
        n_workers = min(len(self.slots), max(1, len(units)))
        record = LaunchRecord(
            launcher=self.name, started_at=time.time(), units=len(units), workers=n_workers, lost_units=[]
        )
        lock = threading.Lock()
        threads = [
            threading.Thread(
                target=self._drive,
                args=(k, self.slots[k], todo, log_dir, progress, record, lock),
                daemon=True,
            )
            for k in range(n_workers)
        ]
        with self._ctrl_c():
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():  # short joins: the Ctrl-C handler runs in this (main) thread
                    t.join(0.2)
        if self._stop.is_set():
            record.interrupted = True
        record.finished_at = time.time()
        return record

    @contextlib.contextmanager
    def _ctrl_c(self) -> Iterator[None]:
        """Catch SIGINT for the duration of the launch (only the main thread may set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _on_interrupt(self, signum: int, frame: object) -> None:
        """First Ctrl-C: no more units, workers save and stop. Second: kill them now."""
        self._interrupts += 1
        self._stop.set()
        first = self._interrupts == 1
        if first:
            sys.stderr.write(
                "\nnestling: interrupted: stopping; runs in progress save their resume point "
                "(press Ctrl-C again to stop at once)\n"
            )
        for proc in list(self._procs.values()):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if first:
                        proc.send_signal(jobenv.PREEMPT_SIGNAL)
                    else:
                        proc.kill()

    def _env(self, gpus: list[str] | None, n_workers: int) -> dict[str, str]:
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        threads = max(1, (os.cpu_count() or 1) // n_workers)
        env.setdefault("OMP_NUM_THREADS", str(threads))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, k: int, gpus: list[str] | None, log_dir: Path) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "nestling.worker", "--serve"]
        env = self._env(gpus, len(self.slots))
        if self.container is not None:
            cmd = self.container.wrap(cmd, environ=env, gpus=gpus, interactive=True)
        log = open(naming.worker_log(log_dir, k), "a")  # noqa: SIM115 - owned by the child process
        return subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            bufsize=1,
        )

    def _drive(
        self,
        k: int,
        gpus: list[str] | None,
        todo: queue.Queue[WorkUnit],
        log_dir: Path,
        progress: Progress,
        record: LaunchRecord,
        lock: threading.Lock,
    ) -> None:
        proc: subprocess.Popen[str] | None = None
        try:
            while not self._stop.is_set():
                try:
                    unit = todo.get_nowait()
                except queue.Empty:
                    return
                if proc is None or proc.poll() is not None:
                    proc = self._start(k, gpus, log_dir)
                    self._procs[k] = proc
                    if not _ready(proc):
                        proc = None
                if self._stop.is_set():  # interrupted while this worker started: its unit stays unstarted
                    return
                if proc is None:
                    _report_lost(unit.run_dirs, progress)
                    with lock:
                        _lost(record, unit.index)
                    continue
                unfinished = self._run_unit(proc, unit, progress)
                if unfinished and self._stop.is_set():  # Ctrl-C: the worker saved and stopped; resumable
                    proc.wait()
                    return
                if unfinished:  # the worker died: only the run it was training is lost
                    proc.kill()  # reap it (a zombie would look alive to the run's attempt lock)
                    proc.wait()
                    _report_lost(unfinished[:1], progress)
                    with lock:
                        _lost(record, unit.index, unfinished[0])
                    if unfinished[1:]:
                        todo.put(
                            WorkUnit(unit.index, unfinished[1:])
                        )  # never started: a fresh worker takes them
                    proc = None
        finally:
            if proc is not None and proc.stdin:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
                proc.wait()
            self._procs.pop(k, None)

    @staticmethod
    def _run_unit(proc: subprocess.Popen[str], unit: WorkUnit, progress: Progress) -> list[str]:
        """Send one unit and relay per-run replies; returns the runs left unfinished when the worker died
        (in order: the first was in progress, the others never started), [] when the unit completed."""
        assert proc.stdin is not None and proc.stdout is not None
        pending = list(unit.run_dirs)
        try:
            proc.stdin.write(json.dumps({"index": unit.index, "run_dirs": unit.run_dirs}) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            return pending
        for line in proc.stdout:
            msg = json.loads(line)
            if "run_dir" in msg:
                progress.run_done(msg["run_dir"], msg["status"])
                if msg["run_dir"] in pending:
                    pending.remove(msg["run_dir"])
            elif msg.get("unit_done") == unit.index:
                return []
        return pending


def _ready(proc: subprocess.Popen[str]) -> bool:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return bool(line) and "ready" in json.loads(line)


def _lost(record: LaunchRecord, unit: int, run_dir: str | None = None) -> None:
    """Note a lost unit (and the run a dying worker was training) in the record; the caller holds the lock."""
    record.lost_units = [*(record.lost_units or []), unit]
    if run_dir is not None:
        record.lost_runs = [*(record.lost_runs or []), run_dir]


def _report_lost(run_dirs: list[str], progress: Progress) -> None:
    for d in run_dirs:
        progress.run_done(d, LOST)
