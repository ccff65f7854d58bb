"""Who runs which work unit of a SLURM launch: one claim file per unit, created exclusively.

A unit's own array task claims it when it starts. A task that has finished its own unit may *steal* a unit whose
task still waits in the queue: it claims that unit, cancels the waiting task (it would find the claim and exit
anyway) and runs the unit in its warm process, so Python, torch and Lightning are loaded once per running task,
not once per run. Only tasks that wait for resources or priority are stolen; a held task, one waiting for its
begin time or a dependency, and a task the user cancelled are left alone.

The claim file holds the claiming job's id (`ARRAYID_TASKID`); a requeued task recognises its own claims.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable

from nestling.core.host import slurm_query
from nestling.core.tree.atomic import FILE_MODE
from nestling.core.tree.naming import ArrayLaunchPaths

# squeue reasons of pending tasks that someone asked to wait: never stolen
NOT_STEALABLE_REASONS = ("JobHeld", "BeginTime", "Dependency", "DependencyNeverSatisfied", "launch failed")


def claim(paths: ArrayLaunchPaths, unit: int, job: str, fresh: bool = False) -> bool:
    """Take unit `unit` for `job`; True if it is now (or, unless `fresh`, already was) this job's to run.

    A task claims its own unit with fresh=False (after a requeue the claim is still its own); a task that takes
    over a waiting unit needs a fresh claim, so that it never takes the same unit twice."""
    path = paths.claim(unit)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return claim(paths, unit, job, fresh)
    except FileExistsError:
        return not fresh and holder(paths, unit) == job
    with os.fdopen(fd, "w") as f:
        json.dump({"job": job, "host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}, f)
    return True


def holder(paths: ArrayLaunchPaths, unit: int) -> str | None:
    """The job that claimed the unit, or None (not started, or the claim is being written this instant)."""
    try:
        return str(json.loads(paths.claim(unit).read_text())["job"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def holders(paths: ArrayLaunchPaths) -> dict[int, str]:
    """unit -> claiming job, for every claimed unit (status reads this once per call)."""
    out: dict[int, str] = {}
    try:
        names = os.listdir(paths.claims)
    except FileNotFoundError:
        return out
    for name in names:
        if name.isdigit():
            job = holder(paths, int(name))
            if job is not None:
                out[int(name)] = job
    return out


def record_stolen(paths: ArrayLaunchPaths, job: str, unit: int) -> None:
    """Remember a stolen unit, so that this task runs it again after a requeue."""
    with open(paths.stolen_by(job), "a") as f:
        f.write(f"{unit}\n")


def stolen(paths: ArrayLaunchPaths, job: str) -> list[int]:
    try:
        return [int(line) for line in paths.stolen_by(job).read_text().split()]
    except FileNotFoundError:
        return []


def array_offsets(paths: ArrayLaunchPaths) -> dict[str, int]:
    """array job id -> index of its task 0's unit (from jobs.json; empty until the first sbatch returned)."""
    try:
        return {str(a["job_id"]): int(a["offset"]) for a in json.loads(paths.jobs.read_text())["arrays"]}
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return {}


def waiting_units(paths: ArrayLaunchPaths) -> list[tuple[int, str]]:
    """(unit, array task id) of this launch's tasks that wait for resources, highest unit first; [] if unknown."""
    offsets = array_offsets(paths)
    reasons = slurm_query.pending_reasons(offsets) if offsets else None
    if not reasons:
        return []
    waiting = []
    for task, reason in reasons.items():
        array, _, index = task.partition("_")
        if array in offsets and index.isdigit() and not reason.startswith(NOT_STEALABLE_REASONS):
            waiting.append((offsets[array] + int(index), task))
    return sorted(waiting, reverse=True)


class Stealer:
    """Takes over waiting units for one task, asking squeue at most every `refresh_s` seconds.

    Short runs end often; one squeue call per finished run would load slurmctld for nothing. Between calls the
    task works through the list it got (highest unit first); a unit that started or was taken meanwhile fails its
    claim and is skipped. A list older than `refresh_s` is asked again, so a task the user cancelled or held since
    is not taken over.
    """

    def __init__(
        self, paths: ArrayLaunchPaths, job: str, refresh_s: float = 30.0, fits: Callable[[int], bool] | None = None
    ) -> None:
        """`fits(unit)`: whether this task can still finish the unit (execute/walltime.py); one that does not is
        left waiting for a fresh task."""
        self.paths, self.job, self.refresh_s, self.fits = paths, job, refresh_s, fits
        self.waiting: list[tuple[int, str]] = []
        self.asked_at = -float("inf")

    def next(self) -> int | None:
        """Claim the next waiting unit and cancel its task; None when nothing waits (or nothing could be claimed
        from a list just asked for: its tasks are being taken by others)."""
        asked = False
        while True:
            if not self.waiting or time.monotonic() - self.asked_at > self.refresh_s:
                if asked:
                    return None
                self.waiting = waiting_units(self.paths)
                self.asked_at = time.monotonic()
                asked = True
                if not self.waiting:
                    return None
            unit, task = self.waiting.pop(0)
            if self.fits is not None and not self.fits(unit):
                continue
            if claim(self.paths, unit, self.job, fresh=True):
                record_stolen(self.paths, self.job, unit)
                if shutil.which("scancel"):  # best effort: if it starts anyway, it sees the claim and exits
                    subprocess.run(["scancel", task], capture_output=True, timeout=30, check=False)
                return unit
