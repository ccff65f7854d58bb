"""SLURM: work units become job-array tasks (submitit's local executor: launch/submitit_local.py).

- One array per at most MaxArraySize units (read from `scontrol show config`), so ceil(units / limit) sbatch calls.
  Each array is one sbatch script (rendered by submitit's template) whose tasks pick their unit from the launch's
  units.json by array index (array_task.py): submitting writes a handful of files, not one pickle per task.
- A task that finished its unit takes over units whose tasks still wait in the queue (claims.py), so a sweep of
  short runs pays the Python + torch start-up once per running task, not once per run.
- Each array task requests the GPUs of one work unit with GRES; SLURM sets CUDA_VISIBLE_DEVICES, Lightning sees
  exactly those. With --accelerator cpu no GRES is requested.
- A collector job depends (afterany) on every array and runs `nestling collect`, so the parquet tables exist when the
  work ends, whether or not anybody is logged in.
- Detached: launch() returns after submission; wait() polls the artifact tree (no sacct needed).
"""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.errors import JobsBlocked, UsageError
from nestling.core.host import slurm_query
from nestling.core.host.slurm_query import Partition, QueuedJob
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_atomic, write_json
from nestling.core.tree.launch_record import ArrayRecord, LaunchRecord
from nestling.core.tree.naming import ArrayLaunchPaths
from nestling.core.tree.run_result import read_result
from nestling.launch.base import Launcher, Progress, SubmitError, count_runs
from nestling.plan.model import WorkUnit

__all__ = ["SlurmArrayLauncher", "SlurmResources", "SubmitError", "slurm_params", "submitit_sbatch_text"]

if TYPE_CHECKING:
    from nestling.core.containers.spec import ContainerSpec

MAX_TIME_LIMIT_REQUEUES = 10  # a run may hit the time limit this often (checkpoint + requeue each time)


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


def chunk(units: list[WorkUnit], size: int) -> list[list[WorkUnit]]:
    return [units[i : i + size] for i in range(0, len(units), size)]


def batch_log_params(folder: Path) -> dict[str, str]:
    """`#SBATCH --output/--error` for a submitit folder whose path holds a line break, which no #SBATCH line can.

    The batch shell's own output then goes to /dev/null; everything the task prints still reaches the folder,
    through srun's --output/--error in the script's body, where the path is shell-quoted and may hold anything.
    """
    if "\n" in str(folder) or "\r" in str(folder):
        return {"output": "/dev/null", "error": "/dev/null"}
    return {}


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


class SlurmArrayLauncher(Launcher):
    """`slurm`: job arrays on a SLURM cluster (detached), then a collector job."""

    name = "slurm"
    detached = True

    def __init__(
        self,
        resources: SlurmResources,
        *,
        dry_run_folder: Path,
        folder: Path | None = None,
        array_limit: int | None = None,
        container: ContainerSpec | None = None,
        steal: bool = True,
        runs_per_gpu: int = 1,
        retrain_after: bool = False,
    ) -> None:
        """`folder`: --submitit_dir (default: _submitit in the plan root); `dry_run_folder`: where `describe` writes
        the scripts; `retrain_after`: also submit `nestling retrain ROOT`, afterok on the collector job;
        `runs_per_gpu` K > 1: each array task runs K workers on its GPU (array_task.PackedRunner)."""
        self.resources = resources
        self.folder = folder
        self.dry_run_folder = dry_run_folder
        self.array_limit = array_limit
        self.container = container
        self.steal = steal
        self.runs_per_gpu = runs_per_gpu
        self.retrain_after = retrain_after

    @property
    def parallel_slots(self) -> int:
        return self.resources.array_parallelism

    def describe(self, root: Path, units: list[WorkUnit], title: str) -> str:
        """Write the scripts and units.json to the dry-run folder; the scripts and a summary, as printed."""
        folder = self.dry_run_folder
        folder.mkdir(parents=True, exist_ok=True)
        limit = slurm_query.max_array_size(self.array_limit)
        scripts = self._write_scripts(folder, ArrayLaunchPaths(folder), units, limit, dry_run=True)
        out = [f"# ---- {path}\n{path.read_text()}" for path, _, _ in scripts]
        if self.container is not None and units:
            worker = [sys.executable, "-m", "nestling.worker", "--serve"]
            example = self.container.wrap(worker, environ={"SLURM_JOB_GPUS": "0"}, interactive=True, job_task=True)
            out.append("# each task feeds its units to one worker in the image, e.g. task 0 (given GPU 0):")
            out.append("# " + shlex.join(example))
        res = self.resources
        arrays = -(-len(units) // limit) if units else 0
        out.append(
            f"dry run: {title}: {count_runs(units)} runs in {len(units)} array tasks, {arrays} array(s) of at most "
            f"{limit} (MaxArraySize) + 1 collector job; per task: {res.nodes} node(s) x {res.tasks_per_node} "
            f"task(s), {res.cpus_per_task} cpus, {res.mem_gb} GB, {res.gpus_per_task} GPU(s), {res.time_min} min, "
            f"partition {res.partition or '(default)'}; nothing was submitted"
        )
        return "\n".join(out)

    def launch(self, root: Path, units: list[WorkUnit], progress: Progress) -> LaunchRecord:
        """One units.json and one sbatch script per array (ceil(units / MaxArraySize)), then the collector job."""
        folder = self.folder or naming.submitit_dir(root)
        folder.mkdir(parents=True, exist_ok=True)
        limit = slurm_query.max_array_size(self.array_limit)
        paths = ArrayLaunchPaths(_new_launch_dir(folder))
        arrays: list[ArrayRecord] = []
        job_ids: list[str] = []
        record = LaunchRecord(launcher=self.name, submitit_folder=str(folder), launch_dir=str(paths.dir),
                              max_array_size=limit, arrays=arrays, job_ids=job_ids, submitted_at=time.time())  # fmt: skip
        for script, part, offset in self._write_scripts(folder, paths, units, limit, dry_run=False):
            try:
                array_id = sbatch(script)
            except SubmitError as exc:  # e.g. sbatch refused the 3rd array: keep what was submitted, say so
                record.submit_error = str(exc)
                break
            arrays.append(ArrayRecord(job_id=array_id, tasks=len(part), offset=offset,
                                      units=[u.index for u in part], run_dirs=[u.run_dirs for u in part]))  # fmt: skip
            job_ids.append(array_id)
            write_json(paths.jobs, {"arrays": [{"job_id": a.job_id, "offset": a.offset, "tasks": a.tasks}
                                               for a in arrays]})  # fmt: skip
        if not job_ids:
            raise SubmitError(record.submit_error or "sbatch submitted nothing", record)
        write_atomic(paths.collector_script, self._collector_script(folder, root, job_ids))
        try:
            record.collector_job_id = sbatch(paths.collector_script)
        except SubmitError as exc:
            record.submit_error = f"collector job: {exc}"
        if self.retrain_after and record.collector_job_id:
            write_atomic(paths.retrain_script, self._retrain_script(folder, root, record.collector_job_id))
            try:
                return record.updated({"retrain_job_id": sbatch(paths.retrain_script)})
            except SubmitError as exc:
                record.submit_error = f"retrain job: {exc}"
        return record

    def _write_scripts(
        self, folder: Path, paths: ArrayLaunchPaths, units: list[WorkUnit], limit: int, dry_run: bool
    ) -> list[tuple[Path, list[WorkUnit], int]]:
        """units.json and one sbatch script per chunk of at most `limit` units: (script, its units, offset)."""
        manifest: dict[str, object] = {
            "units": [u.run_dirs for u in units],
            "container": self.container.to_json() if self.container else None,
            "steal": self.steal,
            "time_min": self.resources.time_min,
            "max_timeouts": MAX_TIME_LIMIT_REQUEUES,
        }
        if self.runs_per_gpu > 1:
            manifest["runs_per_gpu"] = self.runs_per_gpu
        write_json(paths.units, manifest, compact=True)
        chunks = chunk(units, limit)
        offsets = [i * limit for i in range(len(chunks))]  # every chunk but the last holds `limit` units
        scripts = []
        for i, (part, offset) in enumerate(zip(chunks, offsets, strict=True)):
            script = naming.dry_run_script(folder, i) if dry_run else paths.script(i)
            write_atomic(script, self._script(folder, paths.units, offset, len(part)))
            scripts.append((script, part, offset))
        return scripts

    def _script(self, folder: Path, units_file: Path, offset: int, count: int) -> str:
        """The sbatch script of one array: every task runs `python -m nestling.array_task UNITS OFFSET`."""
        params = slurm_params(self.resources)
        if count > 1:  # one unit (e.g. one multi-node run) is a plain job, as with submitit
            params["map_count"] = count
        return _render(folder, ["-m", "nestling.array_task", str(units_file.resolve()), str(offset)], params)

    def _collector_script(self, folder: Path, root: Path, job_ids: list[str]) -> str:
        """A one-CPU job that runs `nestling collect --report` once every array ended (afterany), whoever is logged
        in: the tables and report.html are there when the user comes back."""
        params = slurm_params(self.resources, gres=False)
        params.update(job_name=f"{self.resources.job_name}-collect", cpus_per_task=1, mem="1024MB", time=30,
                      nodes=1, ntasks_per_node=1)  # fmt: skip
        params["additional_parameters"]["dependency"] = "afterany:" + ":".join(job_ids)
        return _render(folder, ["-m", "nestling.cli", "collect", str(root.resolve()), "--report"], params)

    def _retrain_script(self, folder: Path, root: Path, collector_job_id: str) -> str:
        """A one-CPU job that runs `nestling retrain ROOT` once the collector succeeded (afterok): it plans the
        retrain and submits its runs with the tune's launch options, so a detached tune ends with a tested model."""
        params = slurm_params(self.resources, gres=False)
        params.update(job_name=f"{self.resources.job_name}-retrain", cpus_per_task=1, mem="2048MB", time=30,
                      nodes=1, ntasks_per_node=1)  # fmt: skip
        params["additional_parameters"]["dependency"] = f"afterok:{collector_job_id}"
        return _render(folder, ["-m", "nestling.cli", "retrain", str(root.resolve())], params)

    def wait(self, record: LaunchRecord, progress: Progress, poll_s: float = 2.0) -> None:
        """Poll the tree and squeue until every array and the collector job left the queue.

        Stops with JobsBlocked (exit 1, the job left queued) when SLURM keeps a job pending for a reason waiting
        never resolves, rather than waiting forever."""
        job_ids: list[str | None] = [*(record.job_ids or []), record.collector_job_id]
        run_dirs = record.run_dirs
        blocked = BlockedCheck(self.resources, [str(j) for j in job_ids if j])
        while True:
            done: dict[str, int] = {}
            n_done = 0
            for d in run_dirs:
                result = read_result(Path(d))
                if result is not None:
                    n_done += 1
                    done[result["status"]] = done.get(result["status"], 0) + 1
            progress.set_done(n_done, done)
            queue = slurm_query.queue(job_ids)
            if queue == {}:  # None: squeue failed this time, ask again
                return
            line = blocked(queue) if queue else None
            if line:
                raise JobsBlocked(line)
            time.sleep(poll_s)


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


def _render(folder: Path, python_args: list[str], params: dict[str, Any]) -> str:
    """An sbatch script from submitit's template: `srun python -u ARGS`, logs in `folder` (see batch_log_params)."""
    params = {
        **params,
        "additional_parameters": {**batch_log_params(folder), **params["additional_parameters"]},
    }
    command = shlex.join([sys.executable, "-u", *python_args])
    return submitit_sbatch_text(command=command, folder=folder, wckey="nestling", **params)


def submitit_sbatch_text(**kwargs: Any) -> str:
    """The one place that calls submitit's private sbatch template (`submitit.slurm.slurm._make_sbatch_string`).

    Checked against submitit 1.5.4 (its keyword parameters: command, folder, job_name, partition, time, nodes,
    ntasks_per_node, cpus_per_task, gres, mem, signal_delay_s, map_count, array_parallelism, wckey, setup,
    additional_parameters, ...). tests/unit/test_golden_sbatch.py pins its output byte for byte, so a submitit
    upgrade that changes it fails there first.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    text: str = _make_sbatch_string(**kwargs)
    return text


def sbatch(script: Path) -> str:
    """Submit one script; its job id. SubmitError with sbatch's own words when it refuses."""
    try:
        done = subprocess.run(
            ["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SubmitError(f"sbatch {script.name}: {exc}") from None
    job_id = done.stdout.strip().split(";")[0]
    if done.returncode != 0 or not job_id.isdigit():
        words = " ".join((done.stderr or done.stdout).split())[:500]
        raise SubmitError(f"sbatch {script.name} failed: {words or f'exit code {done.returncode}'}")
    return job_id


def _new_launch_dir(folder: Path) -> Path:
    """A fresh directory per launch (each resume adds one), named by time so `ls` lists them in order."""
    import tempfile

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.mkdtemp(prefix=f"launch-{stamp}-", dir=folder))
