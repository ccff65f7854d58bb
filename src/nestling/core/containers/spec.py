"""ContainerSpec: the image a launch's workers run in, checked and resolved once on the submitting host, carried as
JSON in units.json (SLURM array tasks) or pickled (submitit-local); one `wrap()` for every launcher. Also what a
worker takes from the host environment (PASSTHROUGH_PREFIXES) and whether this process runs in an image."""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.containers.binds import auto_binds, task_data_dirs, worker_dir, worker_python
from nestling.core.containers.options import OCI_RUNTIMES, ContainerOptions, parse_env, validate
from nestling.core.containers.runtimes import IN_CONTAINER_ENV, resolve_runtime, wrap_command
from nestling.core.errors import UsageError
from nestling.core.host import worker_limits

if TYPE_CHECKING:
    from nestling.core.options.config import Container as ContainerConfig

# Host variables a containerised worker needs: SLURM's job/step description (Lightning's SLURMEnvironment, the
# result record), the DDP rendezvous, wandb's mode, and its CPU budget, thread variables and umask (worker_limits).
PASSTHROUGH_PREFIXES = (
    "SLURM",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WANDB_MODE",
    *worker_limits.PASSTHROUGH,
    "PYTHONUNBUFFERED",
    "NESTLING_MEMORY_FRACTION",  # --runs_per_gpu: each packed worker's share of the GPU's memory
    "NESTLING_PINNED_GPUS",  # a serial worker pinned to --devices ids: execute/training.py renumbers them
)


def in_container() -> bool:
    """Whether nestling's wrapper (or apptainer/singularity) started this process inside an image.

    Only the environment counts: ``NESTLING_IN_CONTAINER=1`` (set by :func:`wrap_command` for every runtime)
    and the variables apptainer/singularity set themselves. The marker files ``/.dockerenv`` and
    ``/run/.containerenv`` are deliberately not consulted: they describe the machine nestling itself runs on
    (CI runners, dev containers and sandboxes are often containers), so a launcher started there would record
    ``in_container: true`` for runs it never wrapped. ``run_result.json`` must tell whether *this* run went
    through ``--container_image``.
    """
    if os.environ.get(IN_CONTAINER_ENV) == "1":
        return True
    return bool(os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"))


def passthrough_env(environ: Mapping[str, str], opts: ContainerOptions | None = None) -> dict[str, str]:
    """The host variables (PASSTHROUGH_PREFIXES) a worker takes into the image; ``--container_env`` keys win."""
    user = {parse_env(e)[0] for e in opts.env} if opts is not None else set()
    return {k: v for k, v in environ.items() if k.startswith(PASSTHROUGH_PREFIXES) and k not in user}


@dataclass(frozen=True)
class ContainerSpec:
    """The image a launch's workers run in, checked and resolved once on the submitting host.

    ``runtime`` is resolved (never ``auto``); ``auto_binds`` (the artifact dir, the task's data dirs) are bound
    read-write at the same path; ``python`` is the interpreter inside the image (:func:`worker_python`);
    ``workdir`` is where the worker starts.
    """

    image: str
    runtime: str
    binds: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    args: str = ""
    auto_binds: tuple[str, ...] = ()
    python: str = "python"
    workdir: str | None = None

    @classmethod
    def from_config(
        cls, c: ContainerConfig, *, artifact_dir: Path | str, task: Any, task_name: str = "the task"
    ) -> ContainerSpec | None:
        """Validate the CLI's container options and describe the image, or None when no image is set.

        ``task`` is the task preflight already loaded: its ``data_dirs()`` are bound (a missing one is a
        UsageError naming ``task_name``). The worker starts in :func:`worker_dir`.
        """
        opts = ContainerOptions.from_config(c)
        validate(opts)
        if opts.image is None:
            return None
        runtime = resolve_runtime(opts)
        binds, missing = auto_binds(artifact_dir, task_data_dirs(task))
        if missing:
            raise UsageError(
                f"data dir {missing[0]!r} of task {task_name!r} does not exist, so it cannot be bound into "
                "the container image: create it or fix the task's data_dirs()"
            )
        return cls(
            image=opts.image,
            runtime=runtime,
            binds=opts.binds,
            env=opts.env,
            args=opts.args,
            auto_binds=tuple(binds),
            python=worker_python(opts),
            workdir=worker_dir(os.getcwd(), opts.binds, binds),
        )

    @property
    def options(self) -> ContainerOptions:
        return ContainerOptions(
            image=self.image, runtime=self.runtime, binds=self.binds, env=self.env, args=self.args
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object (lists for tuples); :meth:`from_json` reads it back equal."""
        return {
            "image": self.image,
            "runtime": self.runtime,
            "binds": list(self.binds),
            "env": list(self.env),
            "args": self.args,
            "auto_binds": list(self.auto_binds),
            "python": self.python,
            "workdir": self.workdir,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerSpec:
        """Also reads the older units.json shape ({"options": {...}, "runtime", ...}) of launches still queued."""
        if "options" in data:
            # the resolved runtime wins over the option's "auto"; the old top-level "env" was always empty
            data = {**data["options"], **{k: v for k, v in data.items() if k not in ("options", "env")}}
        return cls(
            image=str(data["image"]),
            runtime=str(data["runtime"]),
            binds=tuple(data.get("binds", ())),
            env=tuple(data.get("env", ())),
            args=str(data.get("args", "")),
            auto_binds=tuple(data.get("auto_binds", ())),
            python=str(data.get("python", "python")),
            workdir=data.get("workdir"),
        )

    def wrap(
        self,
        cmd: Sequence[str],
        *,
        environ: Mapping[str, str],
        gpus: Sequence[str] | None = None,
        interactive: bool = False,
        job_task: bool = False,
    ) -> list[str]:
        """The argv that runs the worker command ``cmd`` (``cmd[0]``: the host interpreter) in the image.

        ``environ`` is the worker's host environment; only :func:`passthrough_env` of it enters. ``gpus``: the
        physical ids the worker was given (the local pool's slot). ``job_task``: ``cmd`` is one task of a job
        (a SLURM array task, one srun rank, a submitit job), so its GPUs come from ``environ`` instead:
        apptainer/singularity see the job's devices, so SLURM's ``CUDA_VISIBLE_DEVICES`` passes through;
        docker/podman select devices by node-level id, which is ``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS``
        (``CUDA_VISIBLE_DEVICES`` is renumbered when SLURM constrains devices with cgroups). A job with several
        tasks (multi-node DDP) gets the host network on docker/podman so ranks can reach MASTER_ADDR, unless
        ``--container_args`` chose a network. ``interactive`` keeps stdin attached (``worker --serve``).
        """
        opts = self.options
        if job_task:
            ids = environ.get("CUDA_VISIBLE_DEVICES", "")
            if self.runtime in OCI_RUNTIMES:
                ids = environ.get("SLURM_STEP_GPUS") or environ.get("SLURM_JOB_GPUS") or ids
            gpus = [g for g in ids.split(",") if g and g != "NoDevFiles"] or None
            multi_task = int(environ.get("SLURM_NTASKS", "1") or 1) > 1
            if (
                self.runtime in OCI_RUNTIMES
                and multi_task
                and not any(a.startswith("--net") for a in shlex.split(opts.args))
            ):
                opts = dataclasses.replace(opts, args=f"{opts.args} --network host".strip())
        return wrap_command(
            [self.python, *cmd[1:]],
            opts,
            runtime=self.runtime,
            gpus=gpus,
            auto_binds=[Path(p) for p in self.auto_binds],
            env=passthrough_env(environ, opts),
            workdir=self.workdir,
            interactive=interactive,
        )
