"""What one array task asks SLURM for, and whether any node of the partition can hold it (checked against sinfo before any sbatch)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nestling.core.errors import UsageError
from nestling.core.host import slurm_query
from nestling.core.host.slurm_query import Partition

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class SlurmResources:
    partition: str | None
    time_min: int
    cpus_per_task: int
    mem_gb: float
    gpus_per_task: int  # 0 = no GRES
    account: str | None
    qos: str | None
    constraint: str | None
    array_parallelism: int
    setup: list[str]
    extra: dict[str, str]
    nodes: int = 1
    tasks_per_node: int = 1
    job_name: str = "nestling"
    signal_delay_s: int = 90


def parse_extra(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not eq or not key:
            raise UsageError(
                f"--slurm_extra {item!r} is not KEY=VALUE; e.g. --slurm_extra reservation=gpu-week"
            )
        out[key.replace("-", "_")] = value
    return out


def check_against_sinfo(res: SlurmResources, partitions: dict[str, Partition] | None = None) -> None:
    """The request must fit the nodes of its partition (see fit_problem); says what is wrong before any sbatch.

    `partitions`: sinfo's answer when the caller asked already (doctor); else sinfo is asked here, and nothing is
    checked when it cannot be."""
    if partitions is None:
        partitions = slurm_query.partitions()
    if partitions is None:
        return
    problem = fit_problem(res, partitions)
    if problem:
        raise UsageError(problem)


def fit_problem(res: SlurmResources, partitions: dict[str, Partition]) -> str | None:
    """What in the request no node of its partition offers, naming the largest node and the flag to change; None
    when it fits. Pure (a function of the request and sinfo's answer), so sbatch never sees a job that cannot run.

    Per node SLURM gives cpus_per_task x tasks_per_node CPUs, --mem, and the GRES (gpus_per_task GPUs)."""
    part = res.partition or slurm_query.default_partition(partitions)
    if res.partition and res.partition not in partitions:
        return (
            f"--partition {res.partition!r} does not exist on this cluster; partitions: {', '.join(sorted(partitions))}"
        )
    if part is None:
        return None
    partition = partitions[part]
    largest = partition.largest()
    if largest is None:
        return None
    if res.gpus_per_task > partition.max_gpus:
        return (
            f"--gpus_per_task {res.gpus_per_task} exceeds the {partition.max_gpus} GPUs per node of partition "
            f"{part!r}; ask for fewer GPUs or use --accelerator cpu"
        )
    cpus = res.cpus_per_task * res.tasks_per_node
    mem_mb = int(math.ceil(res.mem_gb * 1024))
    name = f"the largest node of partition {part!r} ({largest.names or largest.partition})"
    if cpus > max(g.cpus for g in partition.groups):
        per_task = f" x {res.tasks_per_node} tasks per node" if res.tasks_per_node > 1 else ""
        flags = "--cpus_per_task or --devices" if res.tasks_per_node > 1 else "--cpus_per_task"
        most = max(g.cpus for g in partition.groups)
        return f"needs {cpus} CPUs per node (--cpus_per_task {res.cpus_per_task}{per_task}); {name} has {most}: lower {flags}"
    if mem_mb > max(g.mem_mb for g in partition.groups):
        roomiest = max(partition.groups, key=lambda g: g.mem_mb)
        at_most = math.floor(roomiest.mem_mb / 1024 * 10) / 10
        return (
            f"needs {mem_mb} MB of memory per node (--mem_gb {res.mem_gb:g}); the largest node of partition {part!r} "
            f"({roomiest.names or part}) has {roomiest.mem_mb} MB: lower --mem_gb to at most {at_most:g}"
        )
    if res.nodes > partition.nodes:
        return f"--num_nodes {res.nodes} exceeds the {partition.nodes} nodes of partition {part!r}: lower --num_nodes"
    job_limit = partition.max_job_nodes
    if job_limit is not None and res.nodes > job_limit:
        return (
            f"--num_nodes {res.nodes} exceeds the {job_limit} nodes partition {part!r} allows one job (MaxNodes): lower "
            "--num_nodes or choose another --partition"
        )
    serving = sum(g.nodes for g in partition.groups
                  if g.cpus >= cpus and g.mem_mb >= mem_mb and g.gpus >= res.gpus_per_task)  # fmt: skip
    if serving < res.nodes:
        return (
            f"needs {res.nodes} node(s) with {cpus} CPUs, {mem_mb} MB and {res.gpus_per_task} GPUs each; partition "
            f"{part!r} has {serving} such nodes: lower --num_nodes, --cpus_per_task, --mem_gb or --gpus_per_task, "
            "or choose another --partition"
        )
    limit = partition.max_time_min
    if limit is not None and res.time_min > limit:
        return (
            f"--time_min {res.time_min} exceeds the {limit} min time limit of partition {part!r}: lower --time_min "
            f"to at most {limit}"
        )
    return None


def slurm_params(res: SlurmResources, gres: bool = True) -> dict[str, Any]:
    """submitit's SLURM parameters for these resources (shared by the array and the collector scripts)."""
    params: dict[str, Any] = {
        "job_name": res.job_name,
        "time": res.time_min,
        "cpus_per_task": res.cpus_per_task,
        "mem": f"{int(math.ceil(res.mem_gb * 1024))}MB",
        "array_parallelism": res.array_parallelism,
        "signal_delay_s": res.signal_delay_s,
        "nodes": res.nodes,
        "ntasks_per_node": res.tasks_per_node,
        "setup": list(res.setup),
        "additional_parameters": dict(res.extra),
    }
    for key, value in (("partition", res.partition), ("account", res.account), ("qos", res.qos),
                       ("constraint", res.constraint)):  # fmt: skip
        if value:
            params[key] = value
    if gres and res.gpus_per_task > 0:
        params["gres"] = f"gpu:{res.gpus_per_task}"
    return params
