"""One attempt at one run: take the run dir's lock, count the attempt, train, write run_result.json atomically.

A failure of the run itself is recorded as data (status "failed"), never raised: a failed run must not stop the
worker's other runs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from nestling import __version__
from nestling.core.containers.spec import in_container as detect
from nestling.core.host.jobenv import JobEnvironment
from nestling.core.tree import attempt_lock
from nestling.core.tree.atomic import write_json
from nestling.core.tree.naming import RunPaths
from nestling.core.tree.run_epochs import RunEpochs, read_curve, run_epochs
from nestling.core.tree.run_result import FAILED, SUCCESS, empty_result, read_result
from nestling.core.tree.run_spec import RunSpec
from nestling.execute.startup import worker_startup
from nestling.execute.training import train

log = logging.getLogger("nestling.run")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def in_container() -> bool:
    return detect()


def next_attempt(paths: RunPaths) -> int:
    """Count starts of this run: a requeued or resumed run keeps its run_id and gets the next attempt number."""
    try:
        previous = int(paths.attempts.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        previous = 0
    return previous + 1


def execute(spec: RunSpec, until_epoch: int | None = None) -> dict[str, Any] | None:
    """Train one run; never raises for a failure of the run itself (it is recorded as status "failed").

    Returns None, touching nothing, when a live attempt holds the run's lock: a run dir is never shared by two
    live attempts. A lock whose holder is gone (killed worker, lost node, earlier incarnation of this SLURM job)
    is taken over.

    `until_epoch` (--pruner asha|hyperband): train to that epoch and pause (see training.train). A paused run that
    goes on is the same attempt, continued: same attempt number, its CSV log appended to, its duration summed,
    unless something started after the pause (a start that was killed or preempted after an epoch, or a new
    attempt): then it is the next attempt, as any restart.
    """
    paths = RunPaths(Path(spec.run_dir))
    paths.dir.mkdir(parents=True, exist_ok=True)
    job = JobEnvironment.from_environ()
    writer = job.global_rank == 0  # only rank 0 writes results and locks
    host = job.node or socket.gethostname()
    # One-task processes (local workers, array tasks) take the lock exclusively; in a multi-task job (srun, DDP)
    # every rank must make the same choice, so rank 0 just marks the run and SLURM keeps the job unique.
    exclusive = writer and not job.multi_task
    if exclusive and not attempt_lock.acquire(paths, host):
        log.warning(
            "run %s: a live attempt holds %s; not starting it a second time", spec.run_name, paths.lock
        )
        return None
    heartbeat = attempt_lock.Heartbeat(paths.lock) if writer else None
    try:
        previous = read_result(paths.dir)
        done = run_epochs(previous)
        if exclusive and done.status == SUCCESS and not _trains_further(done, until_epoch):
            return previous  # finished (or reached this rung) while we waited for the lock
        continued = previous if previous is not None and done.paused and _untouched_since_pause(paths, previous) else None
        attempt = int(continued["attempt"] or 1) if continued is not None else next_attempt(paths)
        result = empty_result(spec)
        startup = worker_startup()  # before the clock starts: a run's duration is its own time
        started = time.time()
        result.update(
            started_at=_now(),
            host=host,
            pid=os.getpid(),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),  # see _record_devices when unset
            slurm_job_id=job.array_job_id or job.job_id,
            slurm_array_task_id=job.array_task_id,
            in_container=in_container(),
            nestling_version=__version__,
            world_size=job.ntasks if writer else None,
            attempt=attempt,
            worker_startup_s=startup,
        )
        log.warning(
            "run %s attempt %d: rank %d of %d on %s", spec.run_name, attempt, job.global_rank, job.ntasks,
            result["host"],
        )  # fmt: skip
        if writer and continued is None:
            _archive_error(paths, attempt - 1)
            write_json(paths.attempts, attempt)
            if not exclusive:
                attempt_lock.mark(paths, host)
        if heartbeat is not None:
            heartbeat.start()
        tracked: dict[str, Any] = {}  # wandb_mode / wandb_reason, filled before training starts
        try:
            metrics, checkpoint, world_size = train(spec, paths, attempt, tracked, result, until_epoch)
            result.update(status=SUCCESS, metrics=metrics, checkpoint=checkpoint, world_size=world_size)
            log.warning(
                "run %s rank %d metrics %s", spec.run_name, job.global_rank, json.dumps(metrics, sort_keys=True)
            )
        except Exception as exc:  # a failed run is data, not a crash of the cv
            result.update(status=FAILED, error=f"{type(exc).__name__}: {exc}".strip()[:2000])
            if writer:
                paths.error.write_text(traceback.format_exc())
            log.warning("run %s failed: %s", spec.run_name, result["error"])
        before = float(continued.get("duration") or 0.0) if continued is not None else 0.0
        result.update(tracked, duration=round(before + time.time() - started, 3), finished_at=_now())
        if writer:
            write_json(paths.result, result)
        return result
    finally:  # also on preemption (SystemExit from the signal handler): this attempt is over
        if heartbeat is not None:
            heartbeat.stop()
        if writer:
            attempt_lock.release(paths)


def _untouched_since_pause(paths: RunPaths, paused: dict[str, Any]) -> bool:
    """Nothing started since this run paused: no later attempt counted, no epoch trained past the pause."""
    curve = read_curve(paths.dir)
    epochs = max((int(e["epoch"]) + 1 for e in curve), default=0)
    return next_attempt(paths) - 1 == int(paused.get("attempt") or 0) and epochs == run_epochs(paused).epochs_trained


def _trains_further(done: RunEpochs, until_epoch: int | None) -> bool:
    """Whether a run with this result has epochs left to train toward `until_epoch` (None: its last epoch)."""
    if done.final or not done.paused:
        return not done.final
    return until_epoch is None or done.epochs_trained < until_epoch


def _archive_error(paths: RunPaths, previous_attempt: int) -> None:
    """A new attempt starts: the traceback of the previous (failed) one moves aside, so that error.txt never
    stands beside a result it does not belong to."""
    if previous_attempt >= 1 and paths.error.is_file():
        os.replace(paths.error, paths.archived_error(previous_attempt))
