"""Retry by failure class, in the worker, in the same command (issue 23 §1): what a worker does with a failed attempt.

  transient_io  retried here after a backoff (10 s, 20 s, 40 s, ... at most 120 s; NESTLING_RETRY_BACKOFF_S sets
                the first), from the run's last checkpoint
  node          the node is recorded broken in the tree (fault_ledger); this worker starts nothing more, and the
                array task requeues itself with the node excluded (array_task.py): the run goes on elsewhere
  oom_shared    left for a worker that runs alone on the GPU (the packed runner's and the local pool's last phase)
  storage       the plan is stopped (failfast.halt): no worker starts another run
  oom, user     recorded, never retried

Every retry counts against `--max_retries` (per run and launch, fault_ledger.py). A retried run keeps its run id and
its attempt count goes up; its failed result is kept as run_result.attempt-N.json, like a resumed run's, and it
continues from its last checkpoint, so nothing is trained twice beyond the failed attempt.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nestling.core.host.devices import MEMORY_FRACTION_ENV
from nestling.core.host.jobenv import JobEnvironment
from nestling.core.tree import failfast, fault_ledger
from nestling.core.tree.failure_class import FailureClass, classify
from nestling.core.tree.run_result import RunResult, archive_result, read_result
from nestling.core.tree.run_state import RunState
from nestling.execute.run_attempt import Trainer, execute
from nestling.plan.store import load_spec

log = logging.getLogger("nestling.run")

BACKOFF_ENV = "NESTLING_RETRY_BACKOFF_S"
BACKOFF_S = 10.0  # the first wait after a transient I/O error; doubled for each further retry
MAX_BACKOFF_S = 120.0


@dataclass(frozen=True)
class Attempted:
    """How a run's turn in this worker ended: its state, the class of its failure, and its result (None when a
    live attempt elsewhere holds the run, or when a full file system left no room to write one)."""

    state: RunState
    failure_class: FailureClass | None = None
    result: RunResult | None = None


def this_node(environ: Mapping[str, str] = os.environ) -> str | None:
    """The SLURM node this process runs on; None outside SLURM (a lone machine has no elsewhere to go)."""
    return JobEnvironment.from_environ(environ).node


def memory_shared(environ: Mapping[str, str] = os.environ) -> bool:
    """This worker shares its GPU with others (--runs_per_gpu K: capped at 1/K of its memory)."""
    fraction = environ.get(MEMORY_FRACTION_ENV, "")
    return bool(fraction) and fraction != "1"


class _Process:
    storage_full = False  # this worker met a full file system (also when the plan's stop mark could not be written)


def held_back(root: Path | None) -> bool:
    """Start nothing more in this worker: its node was found broken (the runs go to other nodes), or it met a full
    file system (no run can finish until somebody frees space)."""
    return _Process.storage_full or (root is not None and fault_ledger.is_broken(root, this_node()))


def kept_failure(run_dir: Path, root: Path | None) -> RunState | None:
    """A run whose last attempt failed (a requeued task, the alone phase, a second pass): FAILED when it is not to
    run again here, else None after counting the retry and archiving the failed result (the attempt then runs)."""
    previous = read_result(run_dir)
    if previous is None or previous.status is not RunState.FAILED:
        return None
    if root is None or not _may_rerun_here(previous.failure_class) or not fault_ledger.may_retry(root, previous.run_id):
        return RunState.FAILED
    assert previous.failure_class is not None
    count = fault_ledger.record_retry(root, previous.run_id, previous.failure_class)
    log.warning("run %s: retry %d after a %s failure: %s", previous.run_name, count, previous.failure_class,
                previous.error)  # fmt: skip
    archive_result(run_dir, previous)
    return None


def _may_rerun_here(failure: FailureClass | None) -> bool:
    if failure is FailureClass.NODE:
        return this_node() is not None  # on SLURM, on another node than the broken one (held_back came first)
    if failure is FailureClass.OOM_SHARED:
        return not memory_shared()  # only alone on its GPU
    return failure is FailureClass.TRANSIENT_IO


def run_with_retries(
    run_dir: Path,
    root: Path | None,
    sleep: Callable[[float], None] = time.sleep,
    until_epoch: int | None = None,
    trainer: Trainer = execute,
) -> Attempted:
    """Load the run's spec and execute it, retrying transient I/O errors here; a node fault marks the node, a full
    file system stops the plan. Never raises for those classes, wherever in the attempt they happen. `until_epoch`:
    a rung (--pruner asha|hyperband) the run trains to; `trainer`: run_attempt.execute, or a simulation."""
    n = 0
    while True:
        try:
            result = trainer(load_spec(run_dir), until_epoch)
        except OSError as exc:  # outside training: the spec, the lock, the attempt count
            outside = classify(exc)
            if outside is FailureClass.STORAGE:
                _stop_plan(root, f"{type(exc).__name__}: {exc}")
                return Attempted(RunState.FAILED, outside)
            if outside is not FailureClass.TRANSIENT_IO or root is None or not _retry_now(root, run_dir, n, exc):
                raise
            n += 1
            sleep(backoff_s(n))
            continue
        if result is None:
            return Attempted(RunState.SKIPPED)
        failure = result.failure_class
        if failure is FailureClass.TRANSIENT_IO and root is not None and fault_ledger.may_retry(root, result.run_id):
            fault_ledger.record_retry(root, result.run_id, failure)
            archive_result(run_dir, result)
            n += 1
            wait = backoff_s(n)
            log.warning("run %s: %s; retry %d in %.0f s", result.run_name, result.error, n, wait)
            sleep(wait)
            continue
        if failure is FailureClass.NODE and root is not None and (node := this_node()) is not None:
            fault_ledger.mark_broken(root, node, result.error or "", result.run_name)
            log.warning("node %s is broken (%s); the run goes on elsewhere", node, result.error)
        if failure is FailureClass.STORAGE:
            _stop_plan(root, result.error or "no space left")
        return Attempted(result.status, failure, result)


def _retry_now(root: Path, run_dir: Path, n: int, exc: OSError) -> bool:
    """Count a retry of a run whose attempt did not get as far as a result; False when its budget is spent."""
    try:
        run_id = run_dir.name.rsplit("-", 1)[-1]
        if not fault_ledger.may_retry(root, run_id):
            return False
        fault_ledger.record_retry(root, run_id, FailureClass.TRANSIENT_IO)
    except OSError:
        return n < fault_ledger.DEFAULT_MAX_RETRIES  # the ledger is on the file system that failed
    log.warning("run %s: %s; retrying", run_dir.name, exc)
    return True


def _stop_plan(root: Path | None, error: str) -> None:
    _Process.storage_full = True
    log.warning("the file system is full (%s): this plan starts no more runs", error)
    if root is not None:
        failfast.halt(root, error, FailureClass.STORAGE.value)


def backoff_s(n: int, environ: Mapping[str, str] = os.environ) -> float:
    """The wait before retry `n` (1, 2, ...): the first backoff doubled each time, at most MAX_BACKOFF_S, +-20 %."""
    try:
        first = float(environ.get(BACKOFF_ENV, BACKOFF_S))
    except ValueError:
        first = BACKOFF_S
    return min(first * 2 ** (n - 1), MAX_BACKOFF_S) * random.uniform(0.8, 1.2)
