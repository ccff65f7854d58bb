"""Jobs SLURM will never start (a pending reason waiting does not resolve): one line naming the job, the reason and the fix."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from nestling.core.host import slurm_query
from nestling.core.host.slurm_query import Partition, QueuedJob
from nestling.launch.slurm.resources import SlurmResources, fit_problem

if TYPE_CHECKING:
    pass

# What to change when SLURM keeps a job pending for a reason waiting never resolves (see slurm_query).
BLOCKED_FIXES = {
    "PartitionConfig": "it asks more than its partition's limits allow (CPUs, memory or GPUs per node, nodes per "
    "job; `scontrol show partition` lists them): lower --cpus_per_task, --devices, --mem_gb, --gpus_per_task or "
    "--num_nodes, or choose another --partition",
    "PartitionNodeLimit": "it asks more nodes than its partition allows for one job: lower --num_nodes or choose "
    "another --partition",
    "PartitionTimeLimit": "its time limit exceeds its partition's: lower --time_min or choose another --partition",
    "BadConstraints": "no node has the features it asks for: fix --constraint",
    "InvalidAccount": "the account is not valid: fix --account (sacctmgr show assoc user=$USER lists yours)",
    "AccountNotAllowed": "its partition does not take this account: choose another --account or --partition",
    "InvalidQOS": "the QOS is not valid: fix --qos",
    "QOSNotAllowed": "its partition does not take this QOS: choose another --qos or --partition",
    "DependencyNeverSatisfied": "a job it depends on ended in a way its dependency excludes",
    "ReqNodeNotAvail": "every node of its partition is down or drained: ask the admins or choose another --partition",
}
FIT_REASONS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit")


class BlockedCheck:
    """One line (the job, SLURM's reason, the fix) for the first job of a launch that SLURM will never start.

    sinfo is asked only when a reason needs it (the request compared with the nodes, or ReqNodeNotAvail: are all
    nodes of the partition down?), and at most every `sinfo_every_s` seconds."""

    def __init__(self, res: SlurmResources, job_ids: list[str], sinfo_every_s: float = 60.0) -> None:
        self.res, self.job_ids, self.sinfo_every_s = res, job_ids, sinfo_every_s
        self.parts: dict[str, Partition] | None = None
        self.asked_at = -math.inf

    def __call__(self, queue: dict[str, QueuedJob]) -> str | None:
        pending = [(job, e) for job, e in queue.items() if e.state == "PENDING"]
        if not any(e.blocked or e.reason_code == "ReqNodeNotAvail" for _, e in pending):
            return None
        if time.monotonic() - self.asked_at > self.sinfo_every_s:
            self.parts, self.asked_at = slurm_query.partitions(), time.monotonic()
        for job, entry in pending:
            if entry.never_starts(self.parts):
                return blocked_line(job, entry, self.res, self.parts, self.job_ids)
        return None


def blocked_line(
    job: str, entry: QueuedJob, res: SlurmResources, parts: dict[str, Partition] | None, job_ids: list[str]
) -> str:
    """`job J can never start: SLURM keeps it PENDING (Reason); <fix>; ...scancel`: one line, the job left queued."""
    fix = fit_problem(res, parts) if parts is not None and entry.reason_code in FIT_REASONS else None
    fix = fix or BLOCKED_FIXES.get(entry.reason_code, "see `scontrol show job` for why")
    return (
        f"job {job} can never start: SLURM keeps it PENDING ({entry.reason}); {fix}. It stays queued: cancel it "
        f"(scancel {' '.join(job_ids)}) and launch again with the fix, or fix it with scontrol update"
    )
