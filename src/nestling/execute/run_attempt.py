"""One attempt at one run: take the run dir's lock, count the attempt, train, write run_result.json atomically.

A failure of the run itself is recorded as data (status "failed"), never raised: a failed run must not stop the
worker's other runs."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from nestling import __version__
from nestling.core.containers.spec import in_container
from nestling.core.host.devices import MEMORY_FRACTION_ENV
from nestling.core.host.jobenv import JobEnvironment
from nestling.core.tree import attempt_lock, failfast
from nestling.core.tree.atomic import write_json
from nestling.core.tree.clock import utc_now
from nestling.core.tree.failure_class import FailureClass, classify, is_storage_error
from nestling.core.tree.naming import RunPaths
from nestling.core.tree.run_epochs import RunEpochs, read_curve, run_epochs
from nestling.core.tree.run_result import RunResult, read_result
from nestling.core.tree.run_spec import RunSpec
from nestling.core.tree.run_state import RunState
from nestling.execute import staging
from nestling.execute.run_origin import run_origin
from nestling.execute.startup import worker_startup
from nestling.execute.training import Trained, TrainingFailed, cached_task, train

log = logging.getLogger("nestling.run")
# What trains a run (spec, until_epoch): `execute`; testing/bowl_workers.py simulates it without Lightning.
Trainer = Callable[[RunSpec, "int | None"], "RunResult | None"]


def next_attempt(paths: RunPaths) -> int:
    """Count starts of this run: a requeued or resumed run keeps its run_id and gets the next attempt number."""
    try:
        previous = int(paths.attempts.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        previous = 0
    return previous + 1


def execute(spec: RunSpec, until_epoch: int | None = None) -> RunResult | None:
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
        if exclusive and previous is not None and previous.status is RunState.SUCCESS and not _trains_further(
            done, until_epoch
        ):
            return previous  # finished (or reached this rung) while we waited for the lock
        paused = previous is not None and done.paused and _untouched_since_pause(paths, previous)
        continued = previous if paused else None
        attempt = int(continued.attempt or 1) if continued is not None else next_attempt(paths)
        startup = worker_startup()  # before the clock starts: a run's duration is its own time
        staged = staging.stage_for_run(spec, cached_task, failfast.plan_root(paths.dir))  # once per node, Task.stage
        started, started_at = time.time(), utc_now()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # as the run starts; unset: what it could see (Placement)
        log.warning("run %s attempt %d: rank %d of %d on %s", spec.run_name, attempt, job.global_rank, job.ntasks, host)
        if writer and continued is None:
            _archive_error(paths, attempt - 1)
            write_json(paths.attempts, attempt)
            if not exclusive:
                attempt_lock.mark(paths, host)
        if heartbeat is not None:
            heartbeat.start()
        ended: Trained | TrainingFailed
        failure: BaseException | None = None
        origin = run_origin(spec)  # imports the task from the plan's code snapshot
        try:
            ended = train(spec, paths, attempt, until_epoch)
            log.warning(
                "run %s rank %d metrics %s", spec.run_name, job.global_rank, json.dumps(ended.metrics, sort_keys=True)
            )
        except TrainingFailed as failed:  # a failed run is data, not a crash of the cv
            ended, failure = failed, failed.__cause__ or failed
            if writer:
                _write_traceback(paths, failure)
            log.warning("run %s failed: %s", spec.run_name, _error_text(failure))
        trained = ended if isinstance(ended, Trained) else None
        before = float(continued.duration or 0.0) if continued is not None else 0.0  # the segments before the pause
        result = RunResult.for_spec(
            spec,
            RunState.FAILED if failure else RunState.SUCCESS,
            error=_error_text(failure) if failure else None,
            failure_class=failure_class(failure) if failure else None,
            metrics=trained.metrics if trained else {},
            checkpoint=trained.checkpoint if trained else None,
            duration=round(before + time.time() - started, 3),
            started_at=started_at,
            finished_at=utc_now(),
            host=host,
            pid=os.getpid(),
            cuda_visible_devices=visible if visible is not None else ended.placement.visible_devices,
            slurm_job_id=job.array_job_id or job.job_id,
            slurm_array_task_id=job.array_task_id,
            world_size=trained.world_size if trained else job.ntasks if writer else None,
            attempt=attempt,
            in_container=in_container(),
            nestling_version=__version__,
            worker_startup_s=startup,
            wandb_mode=ended.tracking.mode,
            wandb_reason=ended.tracking.reason,
            accelerator=ended.placement.accelerator,
            device_names=ended.placement.device_names,
            peak_memory_bytes=ended.placement.peak_memory_bytes,
            stage_s=staged.seconds if staged is not None else None,
            **origin.fields(),
            epochs_trained=trained.epochs_trained if trained else None,
            stop_reason=trained.stop_reason if trained else None,
        )
        if writer:
            _write_result(paths, result)
        return result
    finally:  # also on preemption (SystemExit from the signal handler): this attempt is over
        if heartbeat is not None:
            heartbeat.stop()
        if writer:
            attempt_lock.release(paths)


def _untouched_since_pause(paths: RunPaths, paused: RunResult) -> bool:
    """Nothing started since this run paused: no later attempt counted, no epoch trained past the pause."""
    curve = read_curve(paths.dir)
    epochs = max((int(e["epoch"]) + 1 for e in curve), default=0)
    return next_attempt(paths) - 1 == int(paused.attempt or 0) and epochs == run_epochs(paused).epochs_trained


def _trains_further(done: RunEpochs, until_epoch: int | None) -> bool:
    """Whether a run with this result has epochs left to train toward `until_epoch` (None: its last epoch)."""
    if done.final or not done.paused:
        return not done.final
    return until_epoch is None or done.epochs_trained < until_epoch


def failure_class(exc: BaseException, environ: Mapping[str, str] = os.environ) -> FailureClass:
    """The class of this attempt's failure, with what the process was given: GPUs (a missing GPU is then the
    node's fault) and a share of one (--runs_per_gpu K: an out-of-memory error is then retried alone)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES", "")
    gpus = bool(environ.get("SLURM_JOB_GPUS") or (visible and visible != "-1"))
    fraction = environ.get(MEMORY_FRACTION_ENV, "")
    shared = bool(fraction) and fraction != "1"
    return classify(exc, gpus_given=gpus, memory_shared=shared)


def _write_traceback(paths: RunPaths, failure: BaseException) -> None:
    """error.txt; on a full file system the result, which is smaller and says the same, matters more."""
    try:
        paths.error.write_text("".join(traceback.format_exception(failure)))
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        paths.error.unlink(missing_ok=True)


def _write_result(paths: RunPaths, result: RunResult) -> None:
    """run_result.json. On a full file system the attempt's outcome still reaches the worker (and the driver,
    which stops handing out work); the run then shows no result, and --resume reruns it once there is room."""
    try:
        write_json(paths.result, result.to_json())
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        log.warning("run %s: its result could not be written (%s)", result.run_name, exc)


def _error_text(exc: BaseException) -> str:
    """A failed run's `error`: the exception's type and message, at most 2,000 characters."""
    return f"{type(exc).__name__}: {exc}".strip()[:2000]


def _archive_error(paths: RunPaths, previous_attempt: int) -> None:
    """A new attempt starts: the traceback of the previous (failed) one moves aside, so that error.txt never
    stands beside a result it does not belong to."""
    if previous_attempt >= 1 and paths.error.is_file():
        os.replace(paths.error, paths.archived_error(previous_attempt))
