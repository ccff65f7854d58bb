"""SLURM: work units become job-array tasks (submitit's local executor: launch/submitit_local.py).

- One array per at most MaxArraySize units (read from `scontrol show config`), so ceil(units / limit) sbatch calls.
  Each array is one sbatch script (rendered by submitit's template) whose tasks pick their unit from the launch's
  units.json by array index (array_task.py): submitting writes a handful of files, not one pickle per task.
- A task that finished its unit takes over units whose tasks still wait in the queue (core/tree/array_claims.py), so a sweep of
  short runs pays the Python + torch start-up once per running task, not once per run.
- Each array task requests the GPUs of one work unit with GRES; SLURM sets CUDA_VISIBLE_DEVICES, Lightning sees
  exactly those. With --accelerator cpu no GRES is requested.
- A collector job depends (afterany) on every array and runs `nestling collect`, so the parquet tables exist when the
  work ends, whether or not anybody is logged in.
- Detached: launch() returns after submission; wait() polls the artifact tree (no sacct needed)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nestling.core.errors import JobsBlocked
from nestling.core.host import slurm_query
from nestling.core.tree import fault_ledger, naming
from nestling.core.tree.atomic import unique_dir, write_atomic, write_json
from nestling.core.tree.launch_record import ArrayRecord, LaunchRecord
from nestling.core.tree.naming import ArrayLaunchPaths
from nestling.core.tree.run_result import result_state
from nestling.launch.base import JobLauncher, Progress, SubmitError, count_runs
from nestling.launch.slurm.blocked import BlockedCheck
from nestling.launch.slurm.resources import SlurmResources, slurm_params
from nestling.launch.slurm.sbatch import render_script, sbatch
from nestling.plan.model import WorkUnit

__all__ = ["SlurmArrayLauncher"]
if TYPE_CHECKING:
    from nestling.core.containers.spec import ContainerSpec

MAX_TIME_LIMIT_REQUEUES = 10  # a run may hit the time limit this often (checkpoint + requeue each time)


def chunk(units: list[WorkUnit], size: int) -> list[list[WorkUnit]]:
    return [units[i : i + size] for i in range(0, len(units), size)]


class SlurmArrayLauncher(JobLauncher):
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
        expected_run_s: float | None = None,
    ) -> None:
        """`folder`: --submitit_dir (default: _submitit in the plan root); `dry_run_folder`: where `describe` writes
        the scripts; `retrain_after`: also submit `nestling retrain ROOT`, afterok on the collector job;
        `runs_per_gpu` K > 1: each array task runs K workers on its GPU (array_task.PackedRunner)."""
        super().__init__(resources, folder=folder, container=container)
        self.dry_run_folder = dry_run_folder
        self.array_limit = array_limit
        self.steal = steal
        self.runs_per_gpu = runs_per_gpu
        self.retrain_after = retrain_after
        self.expected_run_s = expected_run_s
        self.excluded: list[str] = []

    def describe(self, root: Path, units: list[WorkUnit], title: str) -> str:
        """Write the scripts and units.json to the dry-run folder; the scripts and a summary, as printed."""
        folder = self.dry_run_folder
        folder.mkdir(parents=True, exist_ok=True)
        self.excluded = [b.node for b in fault_ledger.broken_nodes(root)]
        limit = slurm_query.max_array_size(self.array_limit)
        scripts = self._write_scripts(folder, ArrayLaunchPaths(folder), units, limit, dry_run=True)
        out = [f"# ---- {path}\n{path.read_text()}" for path, _, _ in scripts]
        if self.container is not None and units:
            worker = [sys.executable, "-m", "nestling.worker", "--serve"]
            # variables passed by name show as names (their values never reach a command line)
            named = {e.partition("=")[0]: "" for e in self.container.env if "=" not in e}
            environ = {"SLURM_JOB_GPUS": "0", **named}
            example = self.container.wrap(worker, environ=environ, interactive=True, job_task=True)
            if self.container.image_source:
                out.append(f"# {self.container.image_source} is pulled once to {self.container.image} at launch")
            out.append("# each task feeds its units to one worker in the image, e.g. task 0 (given GPU 0):")
            out.append("# " + shlex.join(example.argv))
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
        self.excluded = [b.node for b in fault_ledger.broken_nodes(root)]  # found broken by earlier launches
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
            "signal_delay_s": self.resources.signal_delay_s,
            "expected_run_s": self.expected_run_s,  # a take-over must fit the time left (execute/walltime.py)
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
        if self.excluded:  # nodes a run of this plan found broken (core/tree/fault_ledger.py)
            params["exclude"] = ",".join(self.excluded)
        return render_script(folder, ["-m", "nestling.array_task", str(units_file.resolve()), str(offset)], params)

    def _collector_script(self, folder: Path, root: Path, job_ids: list[str]) -> str:
        """A one-CPU job that runs `nestling collect --report` once every array ended (afterany), whoever is logged
        in: the tables and report.html are there when the user comes back."""
        params = slurm_params(self.resources, gres=False)
        params.update(job_name=f"{self.resources.job_name}-collect", cpus_per_task=1, mem="1024MB", time=30,
                      nodes=1, ntasks_per_node=1)  # fmt: skip
        params["additional_parameters"]["dependency"] = "afterany:" + ":".join(job_ids)
        return render_script(folder, ["-m", "nestling.cli", "collect", str(root.resolve()), "--report"], params)

    def _retrain_script(self, folder: Path, root: Path, collector_job_id: str) -> str:
        """A one-CPU job that runs `nestling retrain ROOT` once the collector succeeded (afterok): it plans the
        retrain and submits its runs with the tune's launch options, so a detached tune ends with a tested model."""
        params = slurm_params(self.resources, gres=False)
        params.update(job_name=f"{self.resources.job_name}-retrain", cpus_per_task=1, mem="2048MB", time=30,
                      nodes=1, ntasks_per_node=1)  # fmt: skip
        params["additional_parameters"]["dependency"] = f"afterok:{collector_job_id}"
        return render_script(folder, ["-m", "nestling.cli", "retrain", str(root.resolve())], params)

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
                state = result_state(d)
                if state is not None:
                    n_done += 1
                    done[state] = done.get(state, 0) + 1
            progress.set_done(n_done, done)
            queue = slurm_query.queue(job_ids)
            if queue == {}:  # None: squeue failed this time, ask again
                return
            line = blocked(queue) if queue else None
            if line:
                raise JobsBlocked(line)
            time.sleep(poll_s)


def _new_launch_dir(folder: Path) -> Path:
    """A fresh directory per launch (each resume adds one), named by time so `ls` lists them in order."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return unique_dir(folder, prefix=f"launch-{stamp}-")
