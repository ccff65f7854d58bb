"""The local launcher: a pool of long-lived worker processes, each pinned to its device(s).

Each worker imports torch once and runs many work units (`python -m nestling.worker --serve`). A worker that dies
(SIGKILL, out of memory) costs only the run it was training: that run stays without a result (lost), the runs of
its unit that had not started go back to the queue, a fresh worker takes them, and the rest of the plan completes.

`keep_warm` (a tune followed by its retrain in the same process): at the end of a launch the idle workers are not
stopped but parked, and the next launch of this process with the same slots takes them (their output moved to its
own log), so the retrain pays no second torch + Lightning import. Parked workers that nobody takes are stopped by
`discard_warm` (the retrain calls it) or at exit.

`prestart` starts the pool before the plan exists (commands/start.py calls it before the CLI loads the task): each
worker imports torch, Lightning and the task while the CLI does the same to plan, so a task module that imports
lightning at the top costs one import's time, not two in a row (issue 15 #1). Their stderr is held in memory until
`launch` knows the plan's log dir; `discard` kills them when planning fails, before any run.

Ctrl-C (SIGINT to the terminal's process group, workers included; they ignore it): the first one stops handing
out units and sends each worker the preemption signal, so the run in progress leaves its resume point and the
worker exits; the record says `interrupted` and its unfinished runs are resumable, not lost. A second Ctrl-C
kills the workers at once.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from nestling.core.host import jobenv, worker_limits
from nestling.core.host.devices import MEMORY_FRACTION_ENV, PINNED_GPUS_ENV, memory_fraction
from nestling.core.tree import naming
from nestling.core.tree.failure_class import FailureClass
from nestling.core.tree.launch_record import LaunchRecord
from nestling.core.tree.run_state import RunState
from nestling.launch.base import Launcher, Progress, runs_in_units
from nestling.plan.model import WorkUnit

if TYPE_CHECKING:
    from nestling.core.containers.spec import ContainerSpec



class LocalLauncher(Launcher):
    name = "local"

    def __init__(
        self,
        slots: Sequence[list[str] | None],
        *,
        container: ContainerSpec | None = None,
        runs_per_gpu: int = 1,
        pinned_ids: list[int] | None = None,
    ) -> None:
        """`slots`: one entry per worker, its GPU ids or None (CPU). With `container` each worker runs in that
        image, taking from its host environment only what the spec lets in. `runs_per_gpu` K > 1: the slots hold
        each GPU K times (factory.local_slots) and each GPU worker caps itself at 1/K of the device memory.
        `pinned_ids`: the --devices ids of a serial worker pinned to them (the worker renumbers them)."""
        self.slots = list(slots) or [None]
        self.container = container
        self.runs_per_gpu = runs_per_gpu
        self.pinned_ids = pinned_ids
        self.keep_warm = False  # park the idle workers at the end of a launch for the next one (see the module doc)
        self._prestarted: dict[int, tuple[subprocess.Popen[str], _StderrRelay]] = {}
        self._warm: dict[int, subprocess.Popen[str]] = {}  # parked by an earlier launch with the same slots
        self._stop = threading.Event()  # the first Ctrl-C: hand out no more units
        self._procs: dict[int, subprocess.Popen[str]] = {}  # live workers by slot, for the Ctrl-C handler
        self._interrupts = 0
        self._alone: list[str] = []  # runs out of GPU memory while K shared it: rerun alone at the end
        self._storage_full = False  # a run met a full file system: hand out no more units (retrying cannot help)
        self._alone_phase = False

    def prestart(self, preload: str | None = None, count: int | None = None, code: str | None = None) -> None:
        """Start one worker per slot now (at most `count`: no more than could get work), each importing torch,
        Lightning and the task `preload` (a --task value; from the code snapshot `code`, when given) before it
        reports ready; `launch` uses them, `discard` kills them."""
        for k, gpus in enumerate(self.slots[:count]):
            if k in self._prestarted:
                continue
            cmd = [*self._command(), "--preload", preload or "", *(["--code", code] if code else [])]
            if k == 0 and preload:
                cmd.append("--describe")  # worker 0 sends the task's planning half first
            env = self._env(gpus, len(self.slots))
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                bufsize=1,
            )  # fmt: skip
            self._prestarted[k] = (proc, _StderrRelay(proc))

    def described_task(self) -> dict[str, Any] | None:
        """Worker 0's description of the task ({"task": payload} or {"task_error": why}); None when there is no
        prestarted worker 0 or it ended first. Blocks while the worker loads the task."""
        entry = self._prestarted.get(0)
        if entry is None or entry[0].stdout is None:
            return None
        line = entry[0].stdout.readline()
        try:
            reply = json.loads(line) if line else None
        except ValueError:
            return None
        return reply if isinstance(reply, dict) and ("task" in reply or "task_error" in reply) else None

    @property
    def prestarted(self) -> int:
        return len(self._prestarted)

    def discard(self) -> None:
        """Kill the workers `prestart` started and `launch` did not use (planning failed, or fewer units)."""
        for proc, relay in self._prestarted.values():
            proc.kill()
            proc.wait()
            relay.join()
        self._prestarted.clear()

    @property
    def parallel_slots(self) -> int:
        return len(self.slots)

    def describe(self, root: Path, units: list[WorkUnit], title: str) -> str:
        return f"dry run: {title}: {runs_in_units(units)} on the local launcher"

    def launch(self, root: Path, units: list[WorkUnit], progress: Progress) -> LaunchRecord:
        log_dir = naming.worker_log_dir(root)
        log_dir.mkdir(parents=True, exist_ok=True)
        self._alone, self._alone_phase, self._storage_full = [], False, False
        todo: queue.Queue[WorkUnit] = queue.Queue()
        for unit in units:
            todo.put(unit)
        n_workers = min(len(self.slots), max(1, len(units)))
        record = LaunchRecord(
            launcher=self.name, started_at=time.time(), units=len(units), workers=n_workers, lost_units=[]
        )
        lock = threading.Lock()
        retried: set[str] = set()  # promoted runs a dying worker was training, handed to a fresh worker once
        threads = [
            threading.Thread(
                target=self._drive,
                args=(k, self.slots[k], todo, log_dir, progress, record, lock, retried),
                daemon=True,
            )
            for k in range(n_workers)
        ]
        for k in [k for k in self._prestarted if k >= n_workers]:  # more slots than units: not needed
            proc, relay = self._prestarted.pop(k)
            proc.kill()
            proc.wait()
            relay.join()
        self._warm = _take_warm(self._pool_key)
        with self._ctrl_c():
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():  # short joins: the Ctrl-C handler runs in this (main) thread
                    t.join(0.2)
            self.discard()  # a prestarted worker whose thread found the queue already empty
            _stop_all(self._warm.values())  # parked workers this launch had no use for
            self._warm = {}
            if self._alone and not self._stop.is_set():
                self._run_alone(log_dir, progress, record, lock)
        if self._storage_full:
            record.storage_full = True
        elif self._stop.is_set():
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

    def _run_alone(self, log_dir: Path, progress: Progress, record: LaunchRecord, lock: threading.Lock) -> None:
        """The runs that ran out of GPU memory while K workers shared the GPU (failure class oom_shared), once more,
        one worker per GPU and no cap: the last phase of a --runs_per_gpu launch (execute/retry.py)."""
        sys.stderr.write(f"nestling: {len(self._alone)} run(s) ran out of GPU memory while sharing it; rerunning "
                         "them alone on their GPU\n")  # fmt: skip
        self._alone_phase = True
        discard_warm()  # the shared phase's idle workers would hold GPU memory the runs alone need
        todo: queue.Queue[WorkUnit] = queue.Queue()
        for i, run_dir in enumerate(self._alone):
            todo.put(WorkUnit(-1 - i, [run_dir]))
        slots = list({tuple(slot or ()): slot for slot in self.slots}.values())  # each GPU once
        threads = [
            threading.Thread(target=self._drive, args=(k, slot, todo, log_dir, progress, record, lock), daemon=True)
            for k, slot in enumerate(slots)
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)

    def _env(self, gpus: list[str] | None, n_workers: int) -> dict[str, str]:
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
            if self.pinned_ids is not None:
                env[PINNED_GPUS_ENV] = ",".join(str(i) for i in self.pinned_ids)
            fraction = None if self._alone_phase else memory_fraction(self.runs_per_gpu)
            if fraction is not None:
                env[MEMORY_FRACTION_ENV] = fraction
        worker_limits.for_worker(env, cpus=worker_limits.share(n_workers))  # its share of this machine's CPUs
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @staticmethod
    def _command() -> list[str]:
        return [sys.executable, "-m", "nestling.worker", "--serve"]

    @property
    def _pool_key(self) -> tuple[Any, ...]:
        """Workers are interchangeable between launches with equal slots, GPU sharing and pinning (no image)."""
        slots = tuple(tuple(s) if s is not None else None for s in self.slots)
        return (slots, self.runs_per_gpu, tuple(self.pinned_ids or ()))

    def _start(self, k: int, gpus: list[str] | None, log_dir: Path) -> subprocess.Popen[str]:
        if k in self._prestarted:  # started while the CLI planned; its stderr goes to the log from now on
            proc, relay = self._prestarted.pop(k)
            relay.attach(naming.worker_log(log_dir, k))
            return proc
        warm = self._warm.pop(k, None)
        if warm is not None and warm.poll() is None and warm.stdin is not None:  # left by the last launch
            with contextlib.suppress(BrokenPipeError):
                warm.stdin.write(json.dumps({"log": str(naming.worker_log(log_dir, k))}) + "\n")
                warm.stdin.flush()
                return warm  # it answers {"ready"} once its output goes to this launch's log
        cmd = self._command()
        env = self._env(gpus, len(self.slots))
        log = open(naming.worker_log(log_dir, k), "a")  # noqa: SIM115 - owned by the child process
        pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": log, "text": True}
        if self.container is not None:  # the runtime gets its own environment (secrets by name)
            return self.container.wrap(cmd, environ=env, gpus=gpus, interactive=True).popen(**pipes, bufsize=1)
        return subprocess.Popen(cmd, env=env, bufsize=1, **pipes)

    def _drive(
        self,
        k: int,
        gpus: list[str] | None,
        todo: queue.Queue[WorkUnit],
        log_dir: Path,
        progress: Progress,
        record: LaunchRecord,
        lock: threading.Lock,
        retried: set[str],
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
                    if not _said_ready(proc):
                        proc = None
                if self._stop.is_set():  # interrupted while this worker started: its unit stays unstarted
                    return
                if proc is None:
                    _report_lost(unit.run_dirs, progress)
                    with lock:
                        _lost(record, unit.index)
                    continue
                ended = self._run_unit(proc, unit, progress, lock)
                if ended is not None and self._stop.is_set():  # Ctrl-C: the worker saved and stopped; resumable
                    proc.wait()
                    return
                if ended is not None:  # the worker died: only the run it was training is lost
                    training, unstarted = ended
                    proc.kill()  # reap it (a zombie would look alive to the run's attempt lock)
                    proc.wait()
                    if training is not None:
                        _report_lost([training], progress)
                    with lock:
                        _lost(record, unit.index, training)
                        # A run outside the unit is a promoted one (--pruner asha|hyperband): its trial's promotion
                        # stays in the tree and another worker would take it; when none is left, a fresh one does,
                        # once (a run that kills every worker that trains it is left for --resume).
                        if training is not None and training not in unit.run_dirs and training not in retried:
                            retried.add(training)
                            unstarted = [training, *unstarted]
                    if unstarted:
                        todo.put(WorkUnit(unit.index, unstarted))  # never started: a fresh worker takes them
                    proc = None
        finally:
            if self.keep_warm and self.container is None and proc is not None and proc.poll() is None and (
                not self._stop.is_set() and not self._alone_phase  # (alone: a worker without the memory cap)
            ):
                _park(self._pool_key, k, proc)
            elif proc is not None and proc.stdin:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
                _relay_until_exit(proc, progress)
                proc.wait()
            self._procs.pop(k, None)

    def _run_unit(
        self, proc: subprocess.Popen[str], unit: WorkUnit, progress: Progress, lock: threading.Lock
    ) -> tuple[str | None, list[str]] | None:
        """Send one unit and relay per-run replies. None when the unit completed; when the worker died, the run
        it was training (None when between runs) and the unit's runs it never started. The worker says which
        run it starts ({"started": dir}): with --pruner asha|hyperband it may be a promoted run of another unit;
        a worker that does not say so (an older version) was training the unit's first unfinished run. A run out
        of memory on a shared GPU is kept for the phase alone (its progress is told then)."""
        assert proc.stdin is not None and proc.stdout is not None
        pending = list(unit.run_dirs)
        training: str | None = None
        announced = False
        try:
            proc.stdin.write(json.dumps({"index": unit.index, "run_dirs": unit.run_dirs}) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            return None, pending
        for line in proc.stdout:
            msg = json.loads(line)
            if "started" in msg:
                training, announced = msg["started"], True
            elif "run_dir" in msg:
                state = RunState.named(msg["status"])  # None only from a worker of another version (an image)
                if msg.get("failure_class") == FailureClass.STORAGE:
                    self._storage_full = True
                    self._stop.set()  # no unit more: the next would meet the same full file system
                if msg.get("failure_class") == FailureClass.OOM_SHARED and not self._alone_phase:
                    with lock:
                        self._alone.append(msg["run_dir"])
                elif state is not None:
                    progress.run_done(msg["run_dir"], state)
                if msg["run_dir"] in pending:
                    pending.remove(msg["run_dir"])
                if msg["run_dir"] == training:
                    training = None
            elif msg.get("unit_done") == unit.index:
                return None
        if not announced and pending:
            return pending[0], pending[1:]
        return training, [d for d in pending if d != training]


class _StderrRelay:
    """Copies a prestarted worker's stderr: kept in memory until `attach` names its log file, then appended there."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lock = threading.Lock()
        self._held: list[str] = []
        self._log: TextIO | None = None
        self._thread = threading.Thread(target=self._copy, args=(proc,), daemon=True)
        self._thread.start()

    def _copy(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                with self._lock:
                    if self._log is None:
                        self._held.append(line)
                    else:
                        self._log.write(line)
                        self._log.flush()
        finally:
            with self._lock:
                if self._log is not None:
                    self._log.close()

    def attach(self, path: Path) -> None:
        with self._lock:
            self._log = open(path, "a")  # noqa: SIM115 - closed by the copying thread at the worker's end
            self._log.writelines(self._held)
            self._log.flush()
            self._held.clear()

    def join(self) -> None:
        self._thread.join(timeout=5)


def _relay_until_exit(proc: subprocess.Popen[str], progress: Progress) -> None:
    """A worker without units may still train promoted runs (--pruner asha|hyperband) before it exits: relay
    their replies, and never leave its stdout pipe full."""
    if proc.stdout is None:
        return
    with contextlib.suppress(OSError, ValueError):
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and "run_dir" in msg and (state := RunState.named(msg["status"])):
                    progress.run_done(msg["run_dir"], state)
_PARKED: dict[tuple[Any, ...], dict[int, subprocess.Popen[str]]] = {}  # pool key -> slot -> idle worker
_PARKED_LOCK = threading.Lock()


def _park(key: tuple[Any, ...], k: int, proc: subprocess.Popen[str]) -> None:
    with _PARKED_LOCK:
        if not _PARKED:
            atexit.register(discard_warm)  # idempotent enough: discard_warm of an empty set does nothing
        _PARKED.setdefault(key, {})[k] = proc


def _take_warm(key: tuple[Any, ...]) -> dict[int, subprocess.Popen[str]]:
    """The parked workers of pools like this one; parked workers of other pools are stopped (nothing will take
    them: a process runs one launch at a time)."""
    with _PARKED_LOCK:
        mine = _PARKED.pop(key, {})
        others = [proc for pool in _PARKED.values() for proc in pool.values()]
        _PARKED.clear()
    _stop_all(others)
    return mine


def discard_warm() -> None:
    """Stop every parked worker (a tune kept them for a retrain that did not come, or the process ends)."""
    with _PARKED_LOCK:
        parked = [proc for pool in _PARKED.values() for proc in pool.values()]
        _PARKED.clear()
    _stop_all(parked)


def _stop_all(procs: Iterable[subprocess.Popen[str]]) -> None:
    """Close each idle worker's stdin (it ends its loop and exits), then reap it; kill one that lingers."""
    procs = list(procs)
    for proc in procs:
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.close()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _said_ready(proc: subprocess.Popen[str]) -> bool:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        msg = json.loads(line)
        if "task" in msg or "task_error" in msg:  # a description nobody asked for (planning did not need it)
            continue
        return "ready" in msg
    return False


def _lost(record: LaunchRecord, unit: int, run_dir: str | None = None) -> None:
    """Note a lost unit (and the run a dying worker was training) in the record; the caller holds the lock."""
    record.lost_units = [*(record.lost_units or []), unit]
    if run_dir is not None:
        record.lost_runs = [*(record.lost_runs or []), run_dir]


def _report_lost(run_dirs: list[str], progress: Progress) -> None:
    for d in run_dirs:
        progress.run_done(d, RunState.LOST)
