"""What submitit pickles into jobs: a work unit (checkpointable, so preemption requeues it) and the collector.

Signals: submitit owns SLURM's preemption / time-limit signal (USR2). On it, `UnitJob.checkpoint` saves the run in
progress (or tells the containerised worker to save it) and returns itself for requeue; the requeued task skips
finished runs and resumes the interrupted one from its checkpoint with the same run_id. Lightning's own SLURM
requeue is off (see run._cluster_plugins), so the two never fight over the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import submitit

PREEMPT_SIGNAL = signal.SIGUSR2
_CHILD: dict[str, subprocess.Popen[bytes]] = {}


def _container_command(run_dirs: list[str], container: dict[str, Any]) -> list[str]:
    from nestling.container import ContainerOptions, wrap_command

    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g] or None
    env = {k: v for k, v in os.environ.items() if k.startswith(("SLURM", "WANDB_MODE", "MASTER_"))}
    env.update(container.get("env", {}))
    return wrap_command(
        [container.get("python", sys.executable), "-m", "nestling.worker", *run_dirs],
        ContainerOptions(**container["options"]),
        runtime=container["runtime"],
        gpus=gpus,
        auto_binds=[Path(p) for p in container["auto_binds"]],
        env=env,
    )


def run_unit(run_dirs: list[str], container: dict[str, Any] | None = None) -> dict[str, int]:
    """Run the unit's runs in series in this process (torch imported once), or in one container process."""
    if container is not None:
        proc = subprocess.Popen(_container_command(run_dirs, container))
        _CHILD["proc"] = proc
        return {"returncode": proc.wait()}
    from nestling.worker import run_dirs as run_all

    results = run_all(run_dirs)
    return {"success": sum(r.get("status") == "success" for r in results), "runs": len(results)}


class UnitJob(submitit.helpers.Checkpointable):
    """A work unit as a submitit job that survives preemption and time limits."""

    def __call__(self, run_dirs: list[str], container: dict[str, Any] | None = None) -> dict[str, int]:
        return run_unit(run_dirs, container)

    def checkpoint(self, run_dirs: list[str], container: dict[str, Any] | None = None) -> Any:
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


def collect_plan(root: str) -> dict[str, int]:
    from nestling.collect import collect

    return collect(Path(root)).counts
