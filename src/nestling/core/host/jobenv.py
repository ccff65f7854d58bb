"""The in-job environment (SLURM's variables, read in one place) and the preemption contract.

`JobEnvironment` is what a process learns about the job it runs in (like submitit's JobEnvironment): its task
count and rank, its node, its job and array ids, how often SLURM restarted it. Outside SLURM every field has the
value of a one-task job.

Preemption: SLURM sends PREEMPT_SIGNAL before the time limit or for a preemption (see array_task.py). Whoever
catches it calls `save_in_progress`: the signal goes on to the child process that runs the work (the worker in a
container, which saves and exits), or, with no child, to the saver the run in progress registered with
`on_preempt` (execute/training.py). A process that stops so that SLURM requeues it exits with EXIT_REQUEUED.
A worker installs `stop_on` for that: one re-entrant handler, rank 0 saves, the other ranks wait for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PREEMPT_SIGNAL = signal.SIGUSR2
EXIT_REQUEUED = 75  # EX_TEMPFAIL: stopped to be requeued, not failed


def _int(value: str | None, default: int) -> int:
    try:
        return int(value or default)
    except ValueError:
        return default


@dataclass(frozen=True)
class JobEnvironment:
    """This process's place in its SLURM job (a one-task job outside SLURM)."""

    ntasks: int = 1
    global_rank: int = 0
    local_rank: int = 0
    node: str | None = None
    job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: str | None = None
    restart_count: int = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> JobEnvironment:
        """In a multi-task job (srun) the rank is SLURM's; otherwise a launcher's RANK (Lightning, torchrun)."""
        ntasks = _int(environ.get("SLURM_NTASKS"), 1)
        if ntasks > 1 and "SLURM_PROCID" in environ:
            global_rank = _int(environ["SLURM_PROCID"], 0)
            local_rank = _int(environ.get("SLURM_LOCALID"), 0)
        else:
            global_rank = _int(environ.get("RANK"), 0)
            local_rank = _int(environ.get("LOCAL_RANK"), 0)
        return cls(
            ntasks=ntasks,
            global_rank=global_rank,
            local_rank=local_rank,
            node=environ.get("SLURMD_NODENAME"),
            job_id=environ.get("SLURM_JOB_ID"),
            array_job_id=environ.get("SLURM_ARRAY_JOB_ID"),
            array_task_id=environ.get("SLURM_ARRAY_TASK_ID"),
            restart_count=_int(environ.get("SLURM_RESTART_COUNT"), 0),
        )

    @property
    def multi_task(self) -> bool:
        """Several tasks (srun, multi-node DDP): every rank runs the same unit, SLURM keeps the job unique."""
        return self.ntasks > 1

    @property
    def incarnation(self) -> str:
        """This start of the job: its id and how often SLURM restarted it (the same on every rank)."""
        return f"{self.job_key}-r{self.restart_count}"

    @property
    def job_key(self) -> str:
        """This task's SLURM id as squeue and scontrol name it: ARRAYID_TASKID, or the plain job id."""
        if self.array_job_id and self.array_task_id:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id if self.job_id is not None else f"pid{os.getpid()}"


_savers: list[Callable[[], object]] = []  # the in-process savers of the work in progress, newest last


@contextlib.contextmanager
def on_preempt(saver: Callable[[], object]) -> Iterator[None]:
    """Register `saver` as what the preemption signal saves in this process, for as long as the block runs."""
    _savers.append(saver)
    try:
        yield
    finally:
        _savers.remove(saver)


def save_in_progress(child: subprocess.Popen[Any] | None = None, timeout_s: float = 60) -> None:
    """On the preemption signal: save the work in progress before this process stops.

    A live `child` runs the work (the worker in a container): it gets the signal, saves and exits; it is killed
    after `timeout_s`. Otherwise the newest saver registered with `on_preempt` runs; none means nothing to save.
    """
    if child is not None and child.poll() is None:
        child.send_signal(PREEMPT_SIGNAL)
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
        return
    if _savers:
        _savers[-1]()


_stopping = False  # the first stop signal is being handled (module state: signal handlers run in the main thread)


def stop_on(signals: Sequence[int]) -> None:
    """A worker's handler of the preemption signal (and of SIGTERM in an image): save the run in progress, stop.

    Re-entrant: SLURM signals every process of the job step and the array task forwards the signal once more
    (apptainer and podman pass it on to the image), so a worker in an image gets it twice; the first delivery
    saves, later ones return at once. Global rank 0 saves in the handler and exits EXIT_REQUEUED. The other ranks
    of a multi-task job must not stop first: rank 0 may sit in a collective that needs them, and would then never
    get to save. They run the saver in a thread (it waits until rank 0 is done, execute/training.py) and exit when
    it returns, while the main thread trains on.
    """

    def handler(signum: int, frame: object) -> None:
        global _stopping
        if _stopping:  # os.write: a print could re-enter the stream the first delivery is writing to
            os.write(2, f"nestling: {signal.Signals(signum).name} again while stopping: already handled\n".encode())
            return
        _stopping = True
        if JobEnvironment.from_environ().global_rank == 0:
            _save_and_exit()
        threading.Thread(target=_save_and_exit, name="nestling-stop", daemon=True).start()

    for signum in signals:
        signal.signal(signum, handler)


def _save_and_exit() -> None:
    save_in_progress()
    os._exit(EXIT_REQUEUED)
