"""`nestling status DIR`: the runs of a plan by state, from the artifact tree plus squeue (never sacct).

States: success / failed (run_result.json says so), running (its attempt lock is held, or its array task runs),
pending (its job waits in the queue, or it waits behind another run of its unit), lost (its job or worker ended
without a result), pruned (never started: its trial was stopped after an earlier fold, see study.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling import attempt, naming
from nestling.artifacts import find_plan_root, load_plan
from nestling.errors import strict_parser
from nestling.plan import Plan
from nestling.records import read_json, read_result

STATES = ("success", "failed", "running", "pending", "lost", "pruned")
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD"}


def queued_jobs(job_ids: list[str | None]) -> dict[str, str] | None:
    """squeue entries (one per array task, `ARRAY_TASK` or `JOB`) -> state, for the given job ids only.

    None when squeue cannot be asked (missing, failed, timed out): an unknown queue is not an empty one.
    """
    wanted = {str(j) for j in job_ids if j}
    if not wanted:
        return {}
    if not shutil.which("squeue"):
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    jobs = {}
    for line in out.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job.split("_")[0] in wanted:
            jobs[job] = state
    return jobs


@dataclass(frozen=True)
class RunState:
    run_name: str
    run_id: str
    state: str
    job: str | None
    error: str | None


def run_states(plan: Plan) -> list[RunState]:
    launches = _launches(plan.root)
    last = launches[-1] if launches else None
    job_of: dict[str, str] = {}
    if last and last.get("arrays"):
        taken = _holders(last)
        for array in last["arrays"]:
            for task, dirs in enumerate(array["run_dirs"]):
                job = taken.get(array.get("offset", 0) + task) or f"{array['job_id']}_{task}"
                for d in dirs:
                    job_of[str(Path(d).resolve())] = job
    queue = queued_jobs(last.get("job_ids", [])) if last and last.get("arrays") else {}
    if queue is None:
        print(
            "nestling: warning: squeue failed; unfinished runs show as running/pending, not lost",
            file=sys.stderr,
        )
    finished = bool(last and last.get("finished_at"))
    states = []
    pruned = _pruned_runs(plan)
    for run in plan.runs:
        result = read_result(run.dir)
        job = job_of.get(str(run.dir.resolve()))
        error: str | None
        if result is not None:
            state, error = result.get("status", "failed"), result.get("error")
        elif run.dir.name in pruned:
            state, error = "pruned", None
        else:
            error = None
            state = _unfinished_state(
                run.dir,
                job,
                queue,
                finished,
                has_launch=last is not None,
                slurm=bool(last and last.get("launcher") == "slurm"),
            )
        states.append(RunState(run.run_name, run.run_id, state, job, error))
    return states


def _pruned_runs(plan: Plan) -> set[str]:
    """Run dir names of the trials marked pruned (their runs without a result never start)."""
    if plan.kind != "tune":
        return set()
    from nestling.study import pruned_trials

    marked = pruned_trials(plan.root)
    return {run.dir.name for i, cv in enumerate(plan.cvs) if i in marked for run in cv.runs}


def _unfinished_state(
    run_dir: Path,
    job: str | None,
    queue: dict[str, str] | None,
    finished: bool,
    has_launch: bool,
    slurm: bool = False,
) -> str:
    if job is not None and queue is None:  # the queue is unknown: never call a run lost on a squeue hiccup
        return "running" if attempt.alive(run_dir) else "pending"
    if job is not None:
        slurm_state = queue.get(job) or queue.get(job.split("_")[0])
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


def _array_pending(job: str, queue: dict[str, str]) -> bool:
    """A pending array may be listed as one line `ID_[0-9]` rather than per task."""
    array_id, _, task = job.partition("_")
    return any(key.startswith(f"{array_id}_[") and state in PENDING_STATES for key, state in queue.items())


def _holders(launch: dict[str, Any]) -> dict[int, str]:
    """unit position -> the task that claimed it (its own, or one that took it over), for a SLURM launch."""
    if not launch.get("launch_dir"):
        return {}
    from nestling.launch.claims import holders
    from nestling.naming import ArrayLaunchPaths

    return holders(ArrayLaunchPaths(Path(launch["launch_dir"])))


def _launches(root: Path) -> list[dict[str, Any]]:
    path = root / naming.LAUNCH
    if not path.exists():
        return []
    return read_json(path).get("launches", [])


def count(states: list[RunState]) -> dict[str, int]:
    counts = Counter(s.state for s in states)
    return {k: counts.get(k, 0) for k in STATES}


def status_main(argv: list[str]) -> int:
    parser = strict_parser("nestling status", "Runs of a tune, cv or run dir by state.")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--watch", action="store_true", help="refresh until every run ended")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument(
        "--all", action="store_true", help="list every run, not only unfinished and failed ones"
    )
    parser.add_argument("--json", action="store_true", help="print counts and runs as JSON")
    args = parser.parse_args(argv)
    plan = load_plan(find_plan_root(args.dir))
    while True:
        states = run_states(plan)
        _print(plan, states, args)
        active = any(s.state in ("running", "pending") for s in states)
        if not args.watch or not active:
            return 0
        time.sleep(args.interval)


def _print(plan: Plan, states: list[RunState], args: argparse.Namespace) -> None:
    counts = count(states)
    if args.json:
        print(json.dumps({"counts": counts, "runs": [s.__dict__ for s in states]}))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"{plan.kind} {plan.name}: {len(states)} runs  " + "  ".join(f"{k}={v}" for k, v in counts.items())
    )
    shown = states if args.all else [s for s in states if s.state not in ("success", "pruned")]
    if shown:
        table = Table()
        for col in ("run_name", "run_id", "state", "job", "error"):
            table.add_column(col)
        for s in shown[:200]:
            table.add_row(s.run_name, s.run_id, s.state, s.job or "", (s.error or "")[:80])
        console.print(table)
