"""Choose and configure the launcher for a plan; checks launcher options before anything is written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nestling.config import PARALLEL_STRATEGIES, Config
from nestling.devices import TrainerDevices, uses_gpu, worker_slots
from nestling.errors import UsageError
from nestling.launch.base import Launcher


def make_launcher(config: Config, kind: str, name: str, devices: TrainerDevices) -> Launcher:
    launcher = config.launch.launcher  # `name` is the plan name (job name, dry-run folder)
    container = container_spec(config)
    if launcher == "local":
        from nestling.launch.local import LocalLauncher

        if config.device.strategy in PARALLEL_STRATEGIES:
            slots = worker_slots(config.device.accelerator, devices)
            per_unit = config.launch.gpus_per_task or 1
            if per_unit > 1 and all(slot is not None for slot in slots):
                if len(slots) < per_unit:
                    raise UsageError(
                        f"--gpus_per_task {per_unit} needs at least {per_unit} GPUs; {len(slots)} given by --devices"
                    )
                slots = [
                    sum(slots[i : i + per_unit], []) for i in range(0, len(slots) - per_unit + 1, per_unit)
                ]
        else:
            slots = [None]  # one worker; the Trainer gets the device flags as given
        return LocalLauncher(slots, wrap=_local_wrap(container) if container else None)
    from nestling.launch.slurm import SubmititLauncher, check_against_sinfo

    resources = slurm_resources(config, kind, name, devices)
    if launcher == "slurm":
        check_against_sinfo(resources)
    folder = Path(config.launch.submitit_dir) if config.launch.submitit_dir else None
    if config.launch.dry_run:
        folder = folder or Path(config.logging.artifact_dir) / "_dry_run" / name
    return SubmititLauncher(
        launcher,
        resources,
        folder=folder,
        array_limit=config.launch.max_array_size,
        container=container,
        dry_run=config.launch.dry_run,
        quiet=config.logging.quiet,
        steal=config.launch.steal,
    )


def devices_per_unit(config: Config, devices: TrainerDevices) -> int:
    """GPUs one work unit needs: one per parallel unit, else the Trainer's device count."""
    if config.launch.gpus_per_task is not None:
        return config.launch.gpus_per_task
    if config.device.accelerator not in ("gpu", "cuda"):
        return 0
    if config.device.strategy in PARALLEL_STRATEGIES:
        return 1
    if isinstance(devices, list):
        return len(devices)
    return devices if isinstance(devices, int) else 1


def slurm_resources(config: Config, kind: str, name: str, devices: TrainerDevices) -> Any:
    from nestling.launch.slurm import SlurmResources, parse_extra

    launch = config.launch
    gpus = devices_per_unit(config, devices)
    nodes, tasks = 1, 1
    if kind == "run" and config.device.strategy not in PARALLEL_STRATEGIES:
        count = devices if isinstance(devices, int) else (gpus or 1)
        if config.device.num_nodes > 1 or (isinstance(count, int) and count > 1):
            nodes, tasks = config.device.num_nodes, count  # Lightning requires ntasks-per-node == devices
    return SlurmResources(
        partition=launch.partition,
        time_min=launch.time_min,
        cpus_per_task=launch.cpus_per_task,
        mem_gb=launch.mem_gb,
        gpus_per_task=gpus,
        account=launch.account,
        qos=launch.qos,
        constraint=launch.constraint,
        array_parallelism=launch.array_parallelism,
        setup=list(launch.slurm_setup),
        extra=parse_extra(launch.slurm_extra),
        nodes=nodes,
        tasks_per_node=tasks,
        job_name=f"nestling-{name}",
        signal_delay_s=launch.signal_delay_s,
    )


def container_spec(config: Config, task: Any = None) -> dict[str, Any] | None:
    """The picklable description of the image every worker runs in, or None.

    Bound automatically at the same path: the artifact dir and the task's ``data_dirs()``. The worker starts in
    the submitting directory (relative artifact dirs keep working) with the host's interpreter when a declared
    bind carries it, else the image's ``python`` (container.worker_python).
    """
    c = config.container
    if not c.container_image:
        return None
    from nestling.container import ContainerOptions, resolve_runtime, validate, worker_python

    opts = ContainerOptions.from_config(c)
    validate(opts)
    runtime = resolve_runtime(opts)
    if task is None:
        from nestling.task import load_task

        task = load_task(config.data.task)
    artifact_dir = Path(config.logging.artifact_dir).resolve()
    auto_binds = [str(artifact_dir)]
    for d in (getattr(task, "data_dirs", None) or (lambda: []))():
        path = Path(d).resolve()
        if not path.exists():
            raise UsageError(
                f"data dir {str(d)!r} of task {config.data.task!r} does not exist, so it cannot be bound into "
                "the container image: create it or fix the task's data_dirs()"
            )
        if not any(path == Path(b) or Path(b) in path.parents for b in auto_binds):
            auto_binds.append(str(path))
    return {
        "options": {
            "image": opts.image,
            "runtime": opts.runtime,
            "binds": opts.binds,
            "env": opts.env,
            "args": opts.args,
        },
        "runtime": runtime,
        "auto_binds": auto_binds,
        "env": {},
        "python": worker_python(opts),
        "workdir": os.getcwd(),
    }


def _local_wrap(container: dict[str, Any]) -> Any:
    """`wrap(cmd, gpus, env)` for the local pool: the `worker --serve` command run in the image, stdin attached."""

    def wrap(cmd: list[str], gpus: list[str] | None, env: dict[str, str] | None = None) -> list[str]:
        from nestling.container import ContainerOptions, passthrough_env, wrap_command

        opts = ContainerOptions(**container["options"])
        return wrap_command(
            [container.get("python", cmd[0]), *cmd[1:]],
            opts,
            runtime=container["runtime"],
            gpus=gpus,
            auto_binds=[Path(p) for p in container["auto_binds"]],
            env={**passthrough_env(env or {}, opts), **container.get("env", {})},
            workdir=container.get("workdir"),
            interactive=True,
        )

    return wrap


def uses_gpus(config: Config) -> bool:
    return uses_gpu(config.device.accelerator)
