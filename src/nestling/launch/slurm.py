"""SLURM (and submitit's local executor): work units become job-array tasks, submitted through submitit.

- One array per at most MaxArraySize units (read from `scontrol show config`), so ceil(units / limit) sbatch calls.
- Each array task requests the GPUs of one work unit with GRES; SLURM sets CUDA_VISIBLE_DEVICES, Lightning sees
  exactly those. With --accelerator cpu no GRES is requested.
- A collector job depends (afterany) on every array and runs `nestling collect`, so the parquet tables exist when the
  work ends, whether or not anybody is logged in.
- Detached: launch() returns after submission; wait() polls the artifact tree (no sacct needed).
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling.errors import UsageError
from nestling.launch.base import Launcher, Progress
from nestling.plan import WorkUnit
from nestling.records import read_result

DEFAULT_MAX_ARRAY_SIZE = 1001
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


def max_array_size(override: int | None = None) -> int:
    """MaxArraySize of the cluster: the number of tasks one array may hold (indices 0..MaxArraySize-1)."""
    if override:
        return override
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "config"], capture_output=True, text=True, timeout=20
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return DEFAULT_MAX_ARRAY_SIZE
        match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
        if match:
            return int(match.group(1))
    return DEFAULT_MAX_ARRAY_SIZE


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


def check_against_sinfo(res: SlurmResources) -> None:
    """Partition and GRES must exist on the cluster; says what is wrong before anything is submitted."""
    if not shutil.which("sinfo"):
        return
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%G|%D"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return
    if out.returncode != 0:
        return
    partitions: dict[str, int] = {}
    default = None
    for line in out.stdout.splitlines():
        name, gres, _ = (line.split("|") + ["", ""])[:3]
        if name.endswith("*"):
            name = name[:-1]
            default = name
        gpus = sum(int(m) for m in re.findall(r"gpu(?::[^:(,]+)?:(\d+)", gres))
        partitions[name] = max(partitions.get(name, 0), gpus)
    part = res.partition or default
    if res.partition and res.partition not in partitions:
        raise UsageError(
            f"--partition {res.partition!r} does not exist on this cluster; partitions: {', '.join(sorted(partitions))}"
        )
    if part and res.gpus_per_task > partitions.get(part, 0):
        raise UsageError(
            f"--gpus_per_task {res.gpus_per_task} exceeds the {partitions.get(part, 0)} GPUs per node of partition "
            f"{part!r}; ask for fewer GPUs or use --accelerator cpu"
        )


class SubmitError(RuntimeError):
    """sbatch refused a submission; `record` holds what was submitted before (saved to launch.json)."""

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


class SubmititLauncher(Launcher):
    """`slurm`: job arrays on a SLURM cluster (detached). `submitit-local`: submitit's local executor (attached)."""

    def __init__(
        self,
        cluster: str,
        resources: SlurmResources,
        *,
        folder: Path | None = None,
        array_limit: int | None = None,
        container: dict[str, Any] | None = None,
        dry_run: bool = False,
        quiet: bool = False,
    ) -> None:
        self.cluster = cluster
        self.name = cluster
        self.detached = cluster == "slurm"
        self.resources = resources
        self.folder = folder
        self.array_limit = array_limit
        self.container = container
        self.dry_run = dry_run
        self.quiet = quiet

    # -- executors ---------------------------------------------------------------------------------------------
    def _slurm_params(self, res: SlurmResources, gres: bool = True) -> dict[str, Any]:
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

    def _executor(self, folder: Path, **overrides: Any) -> Any:
        import submitit

        if self.cluster == "slurm":
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_TIME_LIMIT_REQUEUES)
            params = self._slurm_params(self.resources, gres=overrides.pop("gres", True))
            params.update(overrides)
            params["additional_parameters"] = {**batch_log_params(folder), **params["additional_parameters"]}
            executor.update_parameters(**params)
            return executor
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=self.resources.time_min)
        return executor

    # -- Launcher ----------------------------------------------------------------------------------------------
    def launch(self, root: Path, units: list[WorkUnit], progress: Progress) -> dict[str, Any]:
        from nestling.launch.entry import UnitJob, collect_plan

        folder = self.folder or root / "_submitit"
        folder.mkdir(parents=True, exist_ok=True)
        limit = max_array_size(self.array_limit) if self.cluster == "slurm" else max(1, len(units))
        chunks = chunk(units, limit)
        record: dict[str, Any] = {
            "launcher": self.name,
            "submitit_folder": str(folder),
            "max_array_size": limit,
            "arrays": [],
            "job_ids": [],
            "collector_job_id": None,
            "submitted_at": time.time(),
        }
        if self.dry_run:
            record["dry_run"] = True
            record["scripts"] = self._write_scripts(root, folder, chunks)
            return record
        executor = self._executor(folder)
        jobs: list[Any] = []
        failure: str | None = None
        for part in chunks:
            try:
                array_jobs = executor.map_array(
                    UnitJob(), [u.run_dirs for u in part], [self.container] * len(part)
                )
            except Exception as exc:  # e.g. sbatch refused the 3rd array: keep what was submitted, say so
                failure = " ".join(str(exc).split())[:500] or type(exc).__name__
                break
            jobs.extend(array_jobs)
            array_id = str(array_jobs[0].job_id).split("_")[0]
            record["arrays"].append(
                {
                    "job_id": array_id,
                    "tasks": len(part),
                    "units": [u.index for u in part],
                    "run_dirs": [u.run_dirs for u in part],
                }
            )
            record["job_ids"].append(array_id)
        if failure is not None:
            record["submit_error"] = failure
            if not record["job_ids"]:
                raise SubmitError(failure, record)
        if self.cluster == "slurm":
            collector = self._executor(
                folder,
                gres=False,
                job_name=f"{self.resources.job_name}-collect",
                cpus_per_task=1,
                mem="1024MB",
                time=30,
                nodes=1,
                ntasks_per_node=1,
                setup=list(self.resources.setup),
                additional_parameters={
                    **self.resources.extra,
                    "dependency": "afterany:" + ":".join(record["job_ids"]),
                },
            )
            record["collector_job_id"] = str(collector.submit(collect_plan, str(root)).job_id)
            return record
        for job in jobs:  # submitit-local: attached, wait for every task
            with contextlib.suppress(Exception):  # a crashed task leaves its runs without results: lost
                job.result()
        for unit in units:
            for d in unit.run_dirs:
                result = read_result(Path(d))
                progress.run_done(d, result["status"] if result else "lost")
        record["finished_at"] = time.time()
        return record

    def wait(self, record: dict[str, Any], progress: Progress, poll_s: float = 2.0) -> None:
        """Poll the tree and squeue until every array and the collector job left the queue."""
        from nestling.status import queued_jobs

        job_ids = [*record["job_ids"], record["collector_job_id"]]
        run_dirs = [d for array in record["arrays"] for unit in array["run_dirs"] for d in unit]
        while True:
            done: dict[str, int] = {}
            n_done = 0
            for d in run_dirs:
                result = read_result(Path(d))
                if result is not None:
                    n_done += 1
                    done[result["status"]] = done.get(result["status"], 0) + 1
            if hasattr(progress, "set_done"):
                progress.set_done(n_done, done)  # type: ignore[attr-defined]
            if queued_jobs(job_ids) == {}:  # None: squeue failed this time, ask again
                return
            time.sleep(poll_s)

    def _write_scripts(self, root: Path, folder: Path, chunks: list[list[WorkUnit]]) -> list[str]:
        """--dry_run: the sbatch scripts submitit would submit, written under the submitit folder."""
        from submitit.slurm.slurm import _make_sbatch_string

        scripts = []
        for i, part in enumerate(chunks):
            params = self._slurm_params(self.resources)
            params["additional_parameters"] = {**batch_log_params(folder), **params["additional_parameters"]}
            if len(part) > 1:  # submitit submits a single unit as a plain job, not an array of one
                params["map_count"] = len(part)
            text = _make_sbatch_string(command=_python_command(), folder=folder, **params)
            path = folder / f"dry-run-array-{i}.sbatch"
            path.write_text(text)
            scripts.append(str(path))
        return scripts


def _python_command() -> str:
    import shlex
    import sys

    return f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote('%j')}"
