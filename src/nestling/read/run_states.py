"""The state of every run of a plan, from the tree and the queue (squeue, never sacct): success, failed, running,
pending, lost, blocked, not started, interrupted, pruned, paused (at a rung, --pruner asha|hyperband)."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling.core.host import slurm_query
from nestling.core.host.slurm_query import QueuedJob
from nestling.core.ml.scoring import parse_scoring_metrics, run_score_reason
from nestling.core.tree import attempt_lock as attempt
from nestling.core.tree import failfast
from nestling.core.tree import supervisor_pid as supervision
from nestling.core.tree.array_claims import holders
from nestling.core.tree.launch_record import LaunchRecord, read_launches
from nestling.core.tree.naming import ArrayLaunchPaths
from nestling.core.tree.run_epochs import run_epochs
from nestling.core.tree.run_result import read_result
from nestling.execute.search.study import pruned_trials
from nestling.plan.model import Plan

STATES = (
    "success", "failed", "running", "pending", "lost", "blocked", "not started", "interrupted", "pruned", "paused",
)  # fmt: skip
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD"}


@dataclass(frozen=True)
class RunState:
    run_name: str
    run_id: str
    state: str
    job: str | None
    error: str | None
    unstable_reason: str | None = None  # a success whose scoring metrics cannot be scored: metric and value
    epochs_trained: int | None = None  # from the result: how far the run trained (a paused run: its rung)


def _unstable_reason(plan: Plan, result: dict[str, Any]) -> str | None:
    """Why a successful run does not count in its cv's score (see scoring.py); None when it does."""

    cv = plan.options.get("cv", {})
    try:
        scoring = parse_scoring_metrics(cv["scoring_metric"])
        return run_score_reason(result.get("metrics") or {}, scoring, cv["multi_score_strategy"])[1]
    except Exception:  # an old or hand-edited plan: status still lists the runs
        return None


def run_states(plan: Plan) -> list[RunState]:
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
    finished = bool(last and last.finished_at) and supervision.alive(plan.root) is None
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
        epochs = result.get("epochs_trained") if result is not None else None
        if result is not None:
            state, error = result.get("status", "failed"), result.get("error")
            if state == "success" and run_epochs(result).paused:  # waits at a rung, or its trial stopped there
                state = "pruned" if run.dir.name in pruned else "paused"
            elif state == "success":
                unstable = _unstable_reason(plan, result)
        elif run.dir.name in pruned:
            state, error = "pruned", None
        else:
            error = None
            state = _unfinished_state(
                run.dir, job if slurm else None, queue, finished, has_launch=last is not None, slurm=slurm
            )
            entry = _entry(job, queue) if state == "pending" and slurm and job and queue else None
            if entry is not None and entry.never_starts(parts):
                state, error = "blocked", f"blocked: {entry.reason}"
            elif stop is not None and state in ("pending", "lost"):
                state, error = "not started", f"fail-fast: {stop.error}"
            elif interrupted and state in ("lost", "pending"):
                state = "interrupted"
        states.append(RunState(run.run_name, run.run_id, state, job, error, unstable, epochs))
    return states


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
) -> str:
    if job is not None:
        if queue is None:  # the queue is unknown: never call a run lost on a squeue hiccup
            return "running" if attempt.alive(run_dir) else "pending"
        entry = queue.get(job) or queue.get(job.split("_")[0])
        slurm_state = entry.state if entry else None
        if slurm_state in RUNNING_STATES:
            return "running" if attempt.alive(run_dir) else "pending"
        if slurm_state in PENDING_STATES or (slurm_state is None and _array_pending(job, queue)):
            return "pending"
        return "lost"
    if attempt.alive(run_dir):
        return "running"
    if slurm and queue is not None:  # the last SLURM launch never submitted this run (sbatch failed part-way)
        return "lost"
    if finished or not has_launch:
        return "lost" if has_launch else "pending"
    return "pending"


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


def count(states: list[RunState]) -> dict[str, int]:
    counts = Counter(s.state for s in states)
    return {k: counts.get(k, 0) for k in STATES}
