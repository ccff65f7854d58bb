"""Every question nestling asks SLURM's controller: squeue, sinfo, scontrol (never sacct), in one place.

Each call is bounded by a timeout and never raises: `None` means SLURM could not be asked (command missing, failed,
timed out), and callers must treat an unknown queue as unknown, never as empty. The parsers are pure functions of
the commands' text, so they are tested with recorded output.

`run` (a `subprocess.run` stand-in) may be injected, as `nestling doctor` does for its tests; an injected runner
stands for the whole machine, so the `shutil.which` check is made only for the real one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from nestling.core.host.processes import Run

SQUEUE_TIMEOUT_S = 30
INFO_TIMEOUT_S = 20
DEFAULT_MAX_ARRAY_SIZE = 1001
# partition|CPUs|memory MB|GRES|nodes|time limit|state|node list|nodes per job (min-max)
SINFO_FORMAT = "%P|%c|%m|%G|%D|%l|%t|%N|%s"
SQUEUE_FORMAT = "%i|%T|%P|%r"  # job (ARRAYID_TASK, ARRAYID_[range] or JOBID)|state|partition|reason

# Pending reasons that waiting cannot resolve: the job asks what its partition, account or QOS never gives.
# (ReqNodeNotAvail is one only while no node of the job's partition is up: see QueuedJob.never_starts.)
BLOCKED_REASONS = (
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "DependencyNeverSatisfied",
)
UNUSABLE_NODE_STATES = ("down", "drain", "drng", "fail", "failg", "maint", "futr", "inval", "unk", "npc")


@dataclass(frozen=True)
class Answer:
    """What one command printed; `out` is None when it could not be asked, `error` then says why."""

    out: str | None
    error: str = ""


def ask(argv: list[str], timeout: float, run: Run | None = None) -> Answer:
    """Run one SLURM command with a timeout; never raises."""
    if run is None:
        if shutil.which(argv[0]) is None:
            return Answer(None, f"{argv[0]} is not installed")
        run = subprocess.run
    try:
        done = run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Answer(None, str(exc))
    if done.returncode != 0:
        err = (done.stderr or "").strip()
        return Answer(None, err.splitlines()[-1] if err else "no output")
    return Answer(done.stdout or "")


# -- squeue ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedJob:
    state: str  # PENDING, RUNNING, ...
    reason: str  # why it pends (None, Resources, Priority, PartitionConfig, ...)
    partition: str = ""

    @property
    def reason_code(self) -> str:
        """`ReqNodeNotAvail, UnavailableNodes:node[1-2]` -> `ReqNodeNotAvail`."""
        return self.reason.split(",")[0].strip()

    @property
    def blocked(self) -> bool:
        """Pending for a reason that waiting never resolves (whatever the nodes' state)."""
        return self.state == "PENDING" and self.reason_code in BLOCKED_REASONS

    def never_starts(self, partitions: dict[str, Partition] | None) -> bool:
        """Blocked, or waiting for nodes (ReqNodeNotAvail) while no node of its partition is up (`partitions`:
        sinfo's answer; None when unknown, then only the reason counts)."""
        if self.blocked:
            return True
        if self.state != "PENDING" or self.reason_code != "ReqNodeNotAvail" or partitions is None:
            return False
        part = partitions.get(self.partition.rstrip("*"))
        return part is not None and not any(g.usable for g in part.groups)


def squeue_all(run: Run | None = None) -> Answer:
    """Every job in the queue, one line per array task (the form `queue` parses)."""
    return ask(["squeue", "-h", "-r", "-o", SQUEUE_FORMAT], SQUEUE_TIMEOUT_S, run)


def parse_queue(text: str, job_ids: Iterable[str]) -> dict[str, QueuedJob]:
    """squeue lines (SQUEUE_FORMAT) -> entry per job/array task, for the given job ids only."""
    wanted = set(job_ids)
    jobs = {}
    for line in text.splitlines():
        job, state, partition, reason = (line.strip().split("|", 3) + ["", "", ""])[:4]
        if job.split("_")[0] in wanted:
            jobs[job] = QueuedJob(state, reason, partition)
    return jobs


def queue(job_ids: Iterable[str | None], run: Run | None = None) -> dict[str, QueuedJob] | None:
    """squeue entries (one per array task, `ARRAY_TASK`, or `ARRAY_[range]` while pending, or `JOB`) of these jobs.

    Lists the whole queue rather than `-j IDS`: squeue fails on a job id that already left the queue. None when
    squeue cannot be asked: an unknown queue is not an empty one.
    """
    wanted = {str(j) for j in job_ids if j}
    if not wanted:
        return {}
    answer = squeue_all(run)
    return None if answer.out is None else parse_queue(answer.out, wanted)


def pending_reasons(job_ids: Iterable[str], run: Run | None = None) -> dict[str, str] | None:
    """Pending tasks of these jobs (one line per task) -> squeue's reason; None when squeue cannot be asked."""
    ids = [str(j) for j in job_ids]
    if not ids:
        return {}
    answer = ask(["squeue", "-h", "-r", "-t", "PD", "-j", ",".join(ids), "-o", "%i|%r"], SQUEUE_TIMEOUT_S, run)
    if answer.out is None:
        return None
    out = {}
    for line in answer.out.splitlines():
        task, _, reason = line.strip().partition("|")
        if task:
            out[task] = reason
    return out


# -- sinfo ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of one partition that sinfo lists on one line (same CPUs, memory, GRES, time limit and state)."""

    partition: str
    cpus: int
    mem_mb: int
    gpus: int
    gres: str  # as sinfo prints it, e.g. gpu:2 or (null)
    nodes: int
    max_time_min: int | None  # None: no limit
    state: str = "idle"
    names: str = ""
    max_job_nodes: int | None = None  # the partition's MaxNodes (per job); None: no limit

    @property
    def usable(self) -> bool:
        """Up (idle, mixed, allocated, ...): not down, drained or failed."""
        return self.state.rstrip("*~#!%$@^-").lower() not in UNUSABLE_NODE_STATES


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    groups: tuple[NodeGroup, ...]

    @property
    def nodes(self) -> int:
        return sum(g.nodes for g in self.groups)

    @property
    def max_job_nodes(self) -> int | None:
        limits = [g.max_job_nodes for g in self.groups]
        return None if not limits or None in limits else max(t for t in limits if t is not None)

    @property
    def max_gpus(self) -> int:
        return max((g.gpus for g in self.groups), default=0)

    @property
    def max_time_min(self) -> int | None:
        limits = [g.max_time_min for g in self.groups]
        return None if not limits or None in limits else max(t for t in limits if t is not None)

    def largest(self) -> NodeGroup | None:
        """The node with the most CPUs (then memory, then GPUs): the one to name when a request does not fit."""
        return max(self.groups, key=lambda g: (g.cpus, g.mem_mb, g.gpus), default=None)


def sinfo(run: Run | None = None) -> Answer:
    return ask(["sinfo", "-h", "-o", SINFO_FORMAT], INFO_TIMEOUT_S, run)


def gpus_in_gres(gres: str) -> int:
    """GPUs in a GRES string such as `gpu:2`, `gpu:a100:4(S:0-1)`, `gpu:2,shard:8`; 0 for `(null)`."""
    return sum(int(m) for m in re.findall(r"gpu(?::[^:(,]+)?:(\d+)", gres))


def parse_minutes(text: str) -> int | None:
    """A SLURM time limit (`infinite`, `D-HH:MM:SS`, `HH:MM:SS`, `MM:SS`, `MM`) in whole minutes; None: no limit."""
    text = text.strip()
    if not text or text.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days, _, clock = text.rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        day_count = int(days) if days else 0
    except ValueError:
        return None
    if days and len(parts) < 3:  # D-HH or D-HH:MM
        parts = parts + [0] * (3 - len(parts))
    if len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = 0, parts[0], 0
    return day_count * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def _number(text: str) -> int:
    """`%c`/`%m`/`%D` values; a summarised `4+` reads as 4 (at least)."""
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def _max_job_nodes(text: str) -> int | None:
    """`%s`: `1-infinite`, `1-4`, `2+`... -> the most nodes one job may use; None: no limit (or not said)."""
    most = text.strip().rpartition("-")[2]
    return int(most) if most.isdigit() else None


def parse_sinfo(text: str) -> dict[str, Partition]:
    """`sinfo -h -o SINFO_FORMAT` lines -> partition name -> its node groups; the default one ends in `*` there."""
    groups: dict[str, list[NodeGroup]] = {}
    default = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = (line.strip().split("|") + [""] * 9)[:9]
        name, cpus, mem, gres, nodes, limit, state, names, job_nodes = fields
        if name.endswith("*"):
            name = name[:-1]
            default.add(name)
        group = NodeGroup(name, _number(cpus), _number(mem), gpus_in_gres(gres), gres, _number(nodes),
                          parse_minutes(limit), state or "idle", names, _max_job_nodes(job_nodes))  # fmt: skip
        groups.setdefault(name, []).append(group)
    return {name: Partition(name, name in default, tuple(g)) for name, g in groups.items()}


def partitions(run: Run | None = None) -> dict[str, Partition] | None:
    """The cluster's partitions and their nodes; None when sinfo cannot be asked."""
    answer = sinfo(run)
    return None if answer.out is None else parse_sinfo(answer.out)


def default_partition(parts: dict[str, Partition]) -> str | None:
    return next((p.name for p in parts.values() if p.default), None)


# -- scontrol -------------------------------------------------------------------------------------------------


def show_config(run: Run | None = None) -> Answer:
    return ask(["scontrol", "show", "config"], INFO_TIMEOUT_S, run)


def parse_max_array_size(text: str) -> int | None:
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def max_array_size(override: int | None = None, run: Run | None = None) -> int:
    """MaxArraySize of the cluster: the number of tasks one array may hold (indices 0..MaxArraySize-1)."""
    if override:
        return override
    answer = show_config(run)
    limit = parse_max_array_size(answer.out) if answer.out is not None else None
    return limit or DEFAULT_MAX_ARRAY_SIZE


CONTROL_TIMEOUT_S = 60


def exclude_nodes(job_ids: Iterable[str], nodes: Iterable[str], run: Run | None = None) -> list[str]:
    """Keep these jobs off these nodes (`scontrol update JobId=X ExcNodeList=...`): an array id reaches its pending
    tasks, a requeued task (COMPLETING or PENDING) itself. The jobs SLURM updated; a running job is refused, which
    is fine: it is on a node already."""
    excluded = ",".join(sorted(set(nodes)))
    done = []
    for job in job_ids:
        answer = ask(["scontrol", "update", f"JobId={job}", f"ExcNodeList={excluded}"], CONTROL_TIMEOUT_S, run)
        if answer.out is not None:
            done.append(job)
    return done


def requeue(job: str, run: Run | None = None) -> bool:
    """`scontrol requeue JOB`: the job goes back to the queue (same id, SLURM_RESTART_COUNT + 1); False when SLURM
    refused or could not be asked."""
    return ask(["scontrol", "requeue", job], CONTROL_TIMEOUT_S, run).out is not None
