"""What submitit's local executor pickles.

`UnitJob` is a work unit as a submitit job for `--launcher submitit-local` (checkpointable, so the signal
contract is submitit's own there); SLURM arrays do not pickle anything (see launch/task.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import submitit

if TYPE_CHECKING:
    from nestling.container import ContainerSpec

PREEMPT_SIGNAL = signal.SIGUSR2
_CHILD: dict[str, subprocess.Popen[bytes]] = {}


def run_unit(run_dirs: list[str], container: ContainerSpec | None = None) -> dict[str, int]:
    """Run the unit's runs in series in this process (torch imported once), or in one container process."""
    if container is not None:
        cmd = [sys.executable, "-m", "nestling.worker", *run_dirs]
        proc = subprocess.Popen(container.wrap(cmd, environ=os.environ, job_task=True))
        _CHILD["proc"] = proc
        return {"returncode": proc.wait()}
    from nestling.worker import run_dirs as run_all

    results = run_all(run_dirs)
    return {"success": sum(r.get("status") == "success" for r in results), "runs": len(results)}


class UnitJob(submitit.helpers.Checkpointable):
    """A work unit as a submitit job that survives preemption and time limits."""

    def __call__(self, run_dirs: list[str], container: ContainerSpec | None = None) -> dict[str, int]:
        return run_unit(run_dirs, container)

    def checkpoint(self, run_dirs: list[str], container: ContainerSpec | None = None) -> Any:
        proc = _CHILD.get("proc")
        if proc is not None and proc.poll() is None:
            proc.send_signal(PREEMPT_SIGNAL)  # the worker in the container saves and exits
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        else:
            from nestling.run import save_interrupt_checkpoint

            save_interrupt_checkpoint()
        return submitit.helpers.DelayedSubmission(self, run_dirs, container)
