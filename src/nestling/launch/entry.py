"""The worker command of a SLURM task in a container image, and what submitit's local executor pickles.

`slurm_task_command` is what an array task (launch/task.py) or one srun rank starts when the run goes into an
image. `UnitJob` is a work unit as a submitit job for `--launcher submitit-local` (checkpointable, so the signal
contract is submitit's own there); SLURM arrays do not pickle anything (see launch/task.py).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import submitit

from nestling.jobenv import save_in_progress

_CHILD: dict[str, subprocess.Popen[bytes]] = {}


def slurm_task_command(
    worker_args: list[str],
    container: dict[str, Any],
    environ: Mapping[str, str] | None = None,
    interactive: bool = False,
) -> list[str]:
    """The command one SLURM task (an array task, or one srun rank) runs: the worker inside the image.

    ``worker_args``: run dirs, or ``--serve`` (``interactive``: stdin stays attached) for a task that feeds the
    worker unit after unit (launch/task.py).
    Pure given ``environ`` (the task's environment), so tests can snapshot it. GPUs: apptainer/singularity see
    the job's devices, so SLURM's ``CUDA_VISIBLE_DEVICES`` passes through; docker/podman select devices by
    node-level id, which is ``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS`` (``CUDA_VISIBLE_DEVICES`` is renumbered
    when SLURM constrains devices with cgroups). A job with several tasks (multi-node DDP) gets the host network
    on docker/podman so ranks can reach MASTER_ADDR, unless ``--container_args`` chose a network.
    """
    from nestling.container import OCI_RUNTIMES, ContainerOptions, passthrough_env, wrap_command

    environ = os.environ if environ is None else environ
    runtime = container["runtime"]
    opts = ContainerOptions(**container["options"])
    ids = environ.get("CUDA_VISIBLE_DEVICES", "")
    if runtime in OCI_RUNTIMES:
        ids = environ.get("SLURM_STEP_GPUS") or environ.get("SLURM_JOB_GPUS") or ids
    gpus = [g for g in ids.split(",") if g and g != "NoDevFiles"] or None
    multi_task = int(environ.get("SLURM_NTASKS", "1") or 1) > 1
    if (
        runtime in OCI_RUNTIMES
        and multi_task
        and not any(a.startswith("--net") for a in shlex.split(opts.args))
    ):
        opts = dataclasses.replace(opts, args=f"{opts.args} --network host".strip())
    return wrap_command(
        [container.get("python", sys.executable), "-m", "nestling.worker", *worker_args],
        opts,
        runtime=runtime,
        gpus=gpus,
        auto_binds=[Path(p) for p in container["auto_binds"]],
        env={**passthrough_env(environ, opts), **container.get("env", {})},
        workdir=container.get("workdir"),
        interactive=interactive,
    )


def run_unit(run_dirs: list[str], container: dict[str, Any] | None = None) -> dict[str, int]:
    """Run the unit's runs in series in this process (torch imported once), or in one container process."""
    if container is not None:
        proc = subprocess.Popen(slurm_task_command(run_dirs, container))
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
        save_in_progress(_CHILD.get("proc"))  # the worker in the container, or the run in this process, saves
        return submitit.helpers.DelayedSubmission(self, run_dirs, container)
