"""`--launcher submitit-local`: submitit's local executor, one pickled UnitJob per work unit (attached).

A way to try the SLURM code path's job model (checkpointable jobs, submitit's log folder) on one machine; the
resources are the SLURM launcher's (only the time limit and the parallelism matter here).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nestling.core.host import worker_limits
from nestling.core.lazy import lazy_module
from nestling.core.tree import naming
from nestling.core.tree.launch_record import ArrayRecord, LaunchRecord
from nestling.core.tree.run_result import read_result
from nestling.core.tree.run_state import RunState
from nestling.launch.base import JobLauncher, Progress, runs_in_units
from nestling.plan.model import WorkUnit

if TYPE_CHECKING:
    from nestling.launch import entry
else:
    entry = lazy_module("nestling.launch.entry")


class SubmititLocalLauncher(JobLauncher):
    name = "submitit-local"
    detached = False

    def describe(self, root: Path, units: list[WorkUnit], title: str) -> str:
        return f"dry run: {title}: {runs_in_units(units)} on the {self.name} launcher"

    def launch(self, root: Path, units: list[WorkUnit], progress: Progress) -> LaunchRecord:
        """One pickled entry.UnitJob per unit in submitit's local executor, every task awaited."""
        import submitit

        folder = self.folder or naming.submitit_dir(root)
        folder.mkdir(parents=True, exist_ok=True)
        record = LaunchRecord(launcher=self.name, submitit_folder=str(folder), arrays=[], job_ids=[],
                              submitted_at=time.time())  # fmt: skip
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=self.resources.time_min)
        # Every job runs at once on this machine: each gets its share of the CPUs, at most --cpus_per_task.
        cpus = min(self.resources.cpus_per_task, worker_limits.share(len(units)))
        jobs = executor.map_array(
            entry.UnitJob(cpus), [u.run_dirs for u in units], [self.container] * len(units)
        )
        if jobs:
            array_id = str(jobs[0].job_id).split("_")[0]
            record.arrays = [ArrayRecord(job_id=array_id, tasks=len(units), offset=0,
                                         units=[u.index for u in units], run_dirs=[u.run_dirs for u in units])]  # fmt: skip
            record.job_ids = [array_id]
        for job in jobs:
            with contextlib.suppress(Exception):  # a crashed task leaves its runs without results: lost
                job.result()
        for unit in units:
            for d in unit.run_dirs:
                result = read_result(Path(d))
                progress.run_done(d, result.status if result else RunState.LOST)
        record.finished_at = time.time()
        return record
