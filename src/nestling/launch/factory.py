"""Choose and configure the launcher for a plan; checks launcher options before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nestling.config import PARALLEL_STRATEGIES, Config
from nestling.devices import TrainerDevices, uses_gpu, worker_slots
from nestling.errors import UsageError
from nestling.launch.base import Launcher


def make_launcher(config: Config, kind: str, name: str, devices: TrainerDevices) -> Launcher:
    name = config.launch.launcher
    container = container_spec(config)
    if name == "local":
        from nestling.launch.local import LocalLauncher

        if config.device.strategy in PARALLEL_STRATEGIES:
            slots = worker_slots(config.device.accelerator, devices)
        else:
            slots = [None]  # one worker; the Trainer gets the device flags as given
        return LocalLauncher(slots, wrap=_local_wrap(container) if container else None)
    from nestling.launch.slurm import SubmititLauncher, check_against_sinfo

    resources = slurm_resources(config, kind, name, devices)
    if name == "slurm":
        check_against_sinfo(resources)
    folder = Path(config.launch.submitit_dir) if config.launch.submitit_dir else None
    if config.launch.dry_run:
        folder = folder or Path(config.logging.artifact_dir) / "_dry_run" / name
    return SubmititLauncher(
        name,
        resources,
        folder=folder,
        array_limit=config.launch.max_array_size,
        container=container,
        dry_run=config.launch.dry_run,
        quiet=config.logging.quiet,
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
    if launch.max_array_size is not None and launch.max_array_size < 1:
        raise UsageError(f"--max_array_size {launch.max_array_size} must be at least 1")
    if launch.mem_gb <= 0:
        raise UsageError(f"--mem_gb {launch.mem_gb} must be positive")
    if launch.cpus_per_task < 1:
        raise UsageError(f"--cpus_per_task {launch.cpus_per_task} must be at least 1")
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
    )


def container_spec(config: Config) -> dict[str, Any] | None:
    """The picklable description of the image every worker runs in, or None."""
    c = config.container
    if not c.container_image:
        return None
    from nestling.container import ContainerOptions, resolve_runtime, validate

    opts = ContainerOptions(
        image=c.container_image,
        runtime=c.container_runtime,
        binds=tuple(c.container_bind),
        env=tuple(c.container_env),
        args=c.container_args,
    )
    validate(opts)
    runtime = resolve_runtime(opts)
    artifact_dir = Path(config.logging.artifact_dir).resolve()
    return {
        "options": {"image": opts.image, "runtime": opts.runtime, "binds": opts.binds, "env": opts.env, "args": opts.args},
        "runtime": runtime,
        "auto_binds": [str(artifact_dir)],
        "env": {},
    }


def _local_wrap(container: dict[str, Any]) -> Any:
    def wrap(cmd: list[str], gpus: list[str] | None) -> list[str]:
        from nestling.container import ContainerOptions, wrap_command

        return wrap_command(
            cmd,
            ContainerOptions(**container["options"]),
            runtime=container["runtime"],
            gpus=gpus,
            auto_binds=[Path(p) for p in container["auto_binds"]],
            env=container.get("env", {}),
        )

    return wrap


def uses_gpus(config: Config) -> bool:
    return uses_gpu(config.device.accelerator)
