"""What submitit's local executor pickles.

`UnitJob` is a work unit as a submitit job for `--launcher submitit-local` (checkpointable, so the signal contract
is submitit's own there): it runs the unit's worker as a child process and forwards the preemption signal to it.
SLURM arrays do not pickle anything (see array_task.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import submitit

from nestling.core.containers.runtimes import Wrapped
from nestling.core.host import worker_limits
from nestling.core.host.jobenv import save_in_progress

if TYPE_CHECKING:
    from nestling.core.containers.spec import ContainerSpec

_CHILD: dict[str, subprocess.Popen[Any]] = {}


def unit_command(
    run_dirs: list[str], container: ContainerSpec | None = None, environ: Mapping[str, str] | None = None
) -> Wrapped:
    """The worker process of one unit: `python -m nestling.worker RUN_DIR...`, in the image when one is set."""
    cmd = [sys.executable, "-m", "nestling.worker", *run_dirs]
    if container is not None:
        return container.wrap(cmd, environ=os.environ if environ is None else environ, job_task=True)
    return Wrapped(cmd, dict(os.environ if environ is None else environ))


def run_unit(run_dirs: list[str], container: ContainerSpec | None = None, cpus: int | None = None) -> dict[str, int]:
    """Run the unit's runs in series in one worker child process (torch imported once per unit), with `cpus` CPUs
    (worker_limits; None: what the child finds).

    A child, not this process: launch/ starts workers by module name and never imports the training code.
    """
    env = worker_limits.for_worker(dict(os.environ), cpus=cpus)
    proc = unit_command(run_dirs, container, env).popen()
    _CHILD["proc"] = proc
    return {"returncode": proc.wait()}


class UnitJob(submitit.helpers.Checkpointable):
    """A work unit as a submitit job that survives preemption and time limits; `cpus`: its worker's CPU budget."""

    def __init__(self, cpus: int | None = None) -> None:
        self.cpus = cpus

    def __call__(self, run_dirs: list[str], container: ContainerSpec | None = None) -> dict[str, int]:
        return run_unit(run_dirs, container, getattr(self, "cpus", None))  # pickles from before it had none

    def checkpoint(self, run_dirs: list[str], container: ContainerSpec | None = None) -> Any:
        """Forward the preemption signal: the worker saves the run in progress and exits 75 (worker.py)."""
        save_in_progress(_CHILD.get("proc"))
        return submitit.helpers.DelayedSubmission(self, run_dirs, container)
