"""The state of every run of a plan, from the tree and the queue (squeue, never sacct): success, failed, running,
pending, lost, blocked, not started, interrupted, pruned, paused (at a rung, --pruner asha|hyperband): core/tree/run_state.py's
STATUS_STATES."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nestling.core.host import slurm_query
from nestling.core.host.slurm_query import QueuedJob
from nestling.core.ml.scoring import run_score_reason
from nestling.core.tree import attempt_lock as attempt
from nestling.core.tree import failfast
from nestling.core.tree import supervisor_pid as supervision
from nestling.core.tree.array_claims import holders
from nestling.core.tree.launch_record import LaunchRecord, read_launches
from nestling.core.tree.naming import RUN_RESULT, ArrayLaunchPaths
from nestling.core.tree.run_epochs import run_epochs
from nestling.core.tree.run_result import RunResult, read_result
from nestling.core.tree.run_state import STATUS_STATES, RunState
from nestling.execute.search.study import pruned_trials
from nestling.plan.model import Plan

RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD"}
# A run without a result that no job will start (any more): fail-fast or an interrupted launch tell why.
_NEVER_STARTED = (RunState.PENDING, RunState.LOST)


@dataclass(frozen=True)
class RunStatus:
    """One run as `nestling status` lists it."""

    run_name: str
    run_id: str
    state: RunState
    job: str | None
    error: str | None
    unstable_reason: str | None = None  # a success whose scoring metrics cannot be scored: metric and value
    failure_class: str | None = None  # a failed run's class (core/tree/failure_class.py): what nestling did about it
    epochs_trained: int | None = None  # from the result: how far the run trained (a paused run: its rung)


def _unstable_reason(plan: Plan, result: RunResult) -> str | None:
    """Why a successful run does not count in its cv's score (see scoring.py); None when it does."""

    settings = plan.settings
    try:
        return run_score_reason(result.metrics, settings.scoring(), settings.multi_score_strategy)[1]
    except Exception:  # an old or hand-edited plan: status still lists the runs
        return None


def run_states(plan: Plan) -> list[RunStatus]:
    launches = read_launches(plan.root)
    last = launches[-1] if launches else None
    job_of: dict[str, str] = {}
    if last and last.arrays:
        taken = _holders(last)
        for array in last.arrays:
            for task, dirs in enumerate(array.run_dirs):
                holder = taken.get(array.offset + task) or f"{array.job_id}_{task}"
                for d in dirs:
                    job_of[str(Path(d).resolve())] = holder
    slurm = bool(last and last.launcher == "slurm")  # submitit-local job ids mean nothing to squeue
    queue = slurm_query.queue(list(last.job_ids or [])) if slurm and last and last.arrays else {}
    if queue is None:
        print(
            "nestling: warning: squeue failed; unfinished runs show as running/pending, not lost",
            file=sys.stderr,
        )
    # A detached supervisor (--detach) still runs the plan: its unfinished runs wait for it, none is lost yet.
    finished = bool(last and last.finished_at) and supervision.live_supervisor(plan.root) is None
    # ReqNodeNotAvail never ends only while no node of the partition is up: only then is sinfo asked
    nodes_wanted = queue and any(e.reason_code == "ReqNodeNotAvail" for e in queue.values())
    parts = slurm_query.partitions() if nodes_wanted else None
    stop = failfast.stopped(plan.root)  # fail-fast fired: what has no result and nothing holds never started
    interrupted = bool(last and last.interrupted)
    states = []
    pruned = _pruned_runs(plan)
    for run in plan.runs:
        result = read_result(run.dir)
        job = job_of.get(str(run.dir.resolve()))
        unstable = None
        error: str | None
        failure = None
        epochs = result.epochs_trained if result is not None else None
        if result is not None:
            state, error = result.status, result.error
            failure = result.failure_class.value if result.failure_class is not None else None
            if state is RunState.SUCCESS and run_epochs(result).paused:  # waits at a rung, or its trial stopped there
                state = RunState.PRUNED if run.dir.name in pruned else RunState.PAUSED
            elif state is RunState.SUCCESS:
                unstable = _unstable_reason(plan, result)
        elif run.dir.name in pruned:
            state, error = RunState.PRUNED, None
        else:
            error = _unreadable(run.dir)
            state = _unfinished_state(
                run.dir, job if slurm else None, queue, finished, has_launch=last is not None, slurm=slurm
            )
            entry = _entry(job, queue) if state is RunState.PENDING and slurm and job and queue else None
            if entry is not None and entry.never_starts(parts):
                state, error = RunState.BLOCKED, f"blocked: {entry.reason}"
            elif stop is not None and state in _NEVER_STARTED:
                state, error = RunState.NOT_STARTED, f"{'storage' if stop.storage else 'fail-fast'}: {stop.error}"
            elif interrupted and state in _NEVER_STARTED:
                state = RunState.INTERRUPTED
        states.append(RunStatus(run.run_name, run.run_id, state, job, error, unstable, failure, epochs))
    return states


def _unreadable(run_dir: Path) -> str | None:
    """Why a run without a readable result has none, when it has a file that cannot be read (core/tree/damaged.py)."""
    if os.path.exists(os.path.join(run_dir, RUN_RESULT)):
        return f"{RUN_RESULT} cannot be read; --resume reruns the run"
    return None


def _pruned_runs(plan: Plan) -> set[str]:
    """Run dir names of the trials marked pruned (their runs without a result never start)."""
    if plan.kind != "tune":
        return set()

    marked = pruned_trials(plan.root)
    return {run.dir.name for i, cv in enumerate(plan.cvs) if i in marked for run in cv.runs}


def _unfinished_state(
    run_dir: Path,
    job: str | None,
    queue: dict[str, QueuedJob] | None,
    finished: bool,
    has_launch: bool,
    slurm: bool = False,
) -> RunState:
    if job is not None:
        if queue is None:  # the queue is unknown: never call a run lost on a squeue hiccup
            return RunState.RUNNING if attempt.alive(run_dir) else RunState.PENDING
        entry = queue.get(job) or queue.get(job.split("_")[0])
        slurm_state = entry.state if entry else None
        if slurm_state in RUNNING_STATES:
            return RunState.RUNNING if attempt.alive(run_dir) else RunState.PENDING
        if slurm_state in PENDING_STATES or (slurm_state is None and _array_pending(job, queue)):
            return RunState.PENDING
        return RunState.LOST
    if attempt.alive(run_dir):
        return RunState.RUNNING
    if slurm and queue is not None:  # the last SLURM launch never submitted this run (sbatch failed part-way)
        return RunState.LOST
    if finished or not has_launch:
        return RunState.LOST if has_launch else RunState.PENDING
    return RunState.PENDING


def _entry(job: str, queue: dict[str, QueuedJob]) -> QueuedJob | None:
    """The queue's line for an array task (or plain job), or the pending range line `ID_[a-b]` holding it."""
    found = queue.get(job) or queue.get(job.split("_")[0])
    if found is not None:
        return found
    array_id = job.partition("_")[0]
    return next((e for key, e in queue.items() if key.startswith(f"{array_id}_[")), None)


def _array_pending(job: str, queue: dict[str, QueuedJob]) -> bool:
    """A pending array may be listed as one line `ID_[0-9]` rather than per task."""
    array_id, _, task = job.partition("_")
    return any(key.startswith(f"{array_id}_[") and e.state in PENDING_STATES for key, e in queue.items())


def _holders(launch: LaunchRecord) -> dict[int, str]:
    """unit position -> the task that claimed it (its own, or one that took it over), for a SLURM launch."""
    if not launch.launch_dir:
        return {}

    return holders(ArrayLaunchPaths(Path(launch.launch_dir)))


def count(states: list[RunStatus]) -> dict[str, int]:
    """Runs per state, every state of `nestling status` in its order (zeros included)."""
    counts = Counter(s.state for s in states)
    return {state: counts.get(state, 0) for state in STATUS_STATES}
