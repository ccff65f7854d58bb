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
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling import naming
from nestling.errors import UsageError
from nestling.launch.base import Launcher, Progress, SubmitError, count_runs
from nestling.naming import ArrayLaunchPaths
from nestling.plan import WorkUnit
from nestling.records import ArrayRecord, LaunchRecord, read_result, write_atomic, write_json

__all__ = ["SlurmArrayLauncher", "SlurmResources", "SubmitError", "slurm_params", "submitit_sbatch_text"]

if TYPE_CHECKING:
    from nestling.container import ContainerSpec

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
        retrain_after: bool = False,
    ) -> None:
        """`folder`: --submitit_dir (default: _submitit in the plan root); `dry_run_folder`: where `describe` writes
        the scripts; `retrain_after`: also submit `nestling retrain ROOT`, afterok on the collector job."""
        self.resources = resources
        self.folder = folder
        self.dry_run_folder = dry_run_folder
        self.array_limit = array_limit
        self.container = container
        self.steal = steal
        self.retrain_after = retrain_after

    @property
    def parallel_slots(self) -> int:
        return self.resources.array_parallelism

    def describe(self, root: Path, units: list[WorkUnit], title: str) -> str:
        """Write the scripts and units.json to the dry-run folder; the scripts and a summary, as printed."""
        folder = self.dry_run_folder
        folder.mkdir(parents=True, exist_ok=True)
        limit = max_array_size(self.array_limit)
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
        limit = max_array_size(self.array_limit)
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
        write_json(paths.units, {
            "units": [u.run_dirs for u in units],
            "container": self.container.to_json() if self.container else None,
            "steal": self.steal,
            "time_min": self.resources.time_min,
            "max_timeouts": MAX_TIME_LIMIT_REQUEUES,
        }, compact=True)  # fmt: skip
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
        """A one-CPU job that runs `nestling collect` once every array ended (afterany), whoever is logged in."""
        params = slurm_params(self.resources, gres=False)
        params.update(job_name=f"{self.resources.job_name}-collect", cpus_per_task=1, mem="1024MB", time=30,
                      nodes=1, ntasks_per_node=1)  # fmt: skip
        params["additional_parameters"]["dependency"] = "afterany:" + ":".join(job_ids)
        return _render(folder, ["-m", "nestling.cli", "collect", str(root.resolve())], params)

    def _retrain_script(self, folder: Path, root: Path, collector_job_id: str) -> str:
        """A one-CPU job that runs `nestling retrain ROOT` once the collector succeeded (afterok): it plans the
        retrain and submits its runs with the tune's launch options, so a detached tune ends with a tested model."""
        params = slurm_params(self.resources, gres=False)
        params.update(job_name=f"{self.resources.job_name}-retrain", cpus_per_task=1, mem="2048MB", time=30,
                      nodes=1, ntasks_per_node=1)  # fmt: skip
        params["additional_parameters"]["dependency"] = f"afterok:{collector_job_id}"
        return _render(folder, ["-m", "nestling.cli", "retrain", str(root.resolve())], params)

    def wait(self, record: LaunchRecord, progress: Progress, poll_s: float = 2.0) -> None:
        """Poll the tree and squeue until every array and the collector job left the queue."""
        from nestling.status import queued_jobs

        job_ids: list[str | None] = [*(record.job_ids or []), record.collector_job_id]
        run_dirs = record.run_dirs
        while True:
            done: dict[str, int] = {}
            n_done = 0
            for d in run_dirs:
                result = read_result(Path(d))
                if result is not None:
                    n_done += 1
                    done[result["status"]] = done.get(result["status"], 0) + 1
            progress.set_done(n_done, done)
            if queued_jobs(job_ids) == {}:  # None: squeue failed this time, ask again
                return
            time.sleep(poll_s)


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
