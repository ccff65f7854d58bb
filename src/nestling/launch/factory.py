"""Choose and configure the launcher for a plan; checks launcher options before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.containers.spec import ContainerSpec
from nestling.core.errors import UsageError
from nestling.core.host.devices import TrainerDevices, packed_slots, parse_devices, serial_slot, worker_slots
from nestling.core.host.processes import Run, Which
from nestling.core.ml.task import DescribedTask, load_task
from nestling.core.options.config import EPOCH_PRUNERS, PARALLEL_STRATEGIES, Config
from nestling.core.tree import naming
from nestling.launch.base import Launcher
from nestling.launch.local import LocalLauncher
from nestling.launch.slurm.launcher import SlurmArrayLauncher
from nestling.launch.slurm.resources import SlurmResources, check_against_sinfo, parse_extra
from nestling.launch.submitit_local import SubmititLocalLauncher

if TYPE_CHECKING:
    from nestling.launch.local import LocalLauncher


def make_launcher(
    config: Config,
    kind: str,
    name: str,
    devices: TrainerDevices,
    task: Any = None,
    prestarted: LocalLauncher | None = None,
) -> Launcher:
    """`name` is the plan name (job name, dry-run folder); `task` the one preflight loaded, if any;
    `prestarted` the pool `prestart_local` started, used when it fits the checked config (else discarded)."""
    launcher = config.launch.launcher
    container = container_spec(config, task)
    if launcher == "local":
        local = _local_launcher(config, devices, container)
        if (
            prestarted is not None
            and (prestarted.slots, prestarted.runs_per_gpu, prestarted.pinned_ids)
            == (local.slots, local.runs_per_gpu, local.pinned_ids)
            and container is None
        ):
            local = prestarted
        elif prestarted is not None:
            prestarted.discard()
        # a tune whose retrain follows in this process leaves its workers warm for it (no second torch import); not
        # with rungs (asha/hyperband): a worker whose units are done ends by taking the promotions still to come
        local.keep_warm = kind == "tune" and config.tune.retrain and config.tune.pruner not in EPOCH_PRUNERS
        return local
    if prestarted is not None:
        prestarted.discard()
    resources = slurm_resources(config, kind, name, devices)
    folder = Path(config.launch.submitit_dir) if config.launch.submitit_dir else None
    if launcher == "submitit-local":
        return SubmititLocalLauncher(resources, folder=folder, container=container)

    check_against_sinfo(resources)
    return SlurmArrayLauncher(
        resources,
        folder=folder,
        dry_run_folder=folder or naming.dry_run_dir(Path(config.logging.artifact_dir), name),
        array_limit=config.launch.max_array_size,
        container=container,
        steal=config.launch.steal,
        runs_per_gpu=config.launch.runs_per_gpu,
        retrain_after=kind == "tune" and config.tune.retrain and not config.launch.wait,
        expected_run_s=config.launch.expected_run_s,
    )


def prestart_local(config: Config, kind: str = "cv", code: str | None = None) -> LocalLauncher | None:
    """Start the local worker pool before the CLI loads the task and plans, so that the workers' torch + Lightning
    import runs while the CLI imports the task (issue 15 #1); they import the task from the code snapshot `code`.
    None where that does not apply (another launcher, a container, a dry run) or where the device flags are wrong:
    `prepare` then reports them, as before. The caller discards the pool when planning fails; a worker does
    nothing before its first unit."""
    if config.launch.launcher != "local" or config.launch.dry_run or config.container.container_image:
        return None
    if os.environ.get("NESTLING_PRESTART") == "0":  # the sequential start-up, for comparison (bench/one_import.py)
        return None

    try:
        devices = parse_devices(config.device.devices)
        local_slots(config, devices)
    except UsageError:
        return None
    pool = _local_launcher(config, devices, None)
    pool.prestart(config.data.task, count=max_runs(config, kind), code=code)
    return pool


def described_task(pool: LocalLauncher | None, spec: str) -> Any:
    """The task as the pool's first worker described it (task.DescribedTask), or None (no pool, or the worker could
    not describe it: the CLI then loads the task itself and reports any error as before)."""
    if pool is None:
        return None
    reply = pool.described_task()
    if not reply or "task" not in reply:
        return None

    try:
        return DescribedTask(spec, reply["task"])
    except Exception:  # noqa: BLE001 - a description that does not decode: load the task here instead
        return None


def max_runs(config: Config, kind: str) -> int:
    """An upper bound of a plan's runs (hence work units) from the options alone: a pool never pre-starts more
    workers than could get work (a cv of 5 runs on 8 slots starts 5)."""
    folds = 1 if config.data.fold_method == "none" else max(1, config.data.n_folds)
    per_cv = folds * max(1, len(config.cv.seeds) or config.cv.n_seeds)
    if kind == "run":
        return 1
    return per_cv * max(1, config.tune.n_trials) if kind == "tune" else per_cv


def _local_launcher(config: Config, devices: TrainerDevices, container: ContainerSpec | None) -> LocalLauncher:
    slots = local_slots(config, devices)
    serial_ids = (
        devices
        if config.device.strategy not in PARALLEL_STRATEGIES and isinstance(devices, list) and slots[0] is not None
        else None
    )
    return LocalLauncher(
        slots, container=container, runs_per_gpu=config.launch.runs_per_gpu, pinned_ids=serial_ids
    )


def local_slots(config: Config, devices: TrainerDevices) -> list[list[str] | None]:
    """One entry per local worker: its GPU ids (--gpus_per_task of them), or None (CPU / the Trainer decides);
    with --runs_per_gpu K each GPU id K times (K workers share it)."""
    if config.device.strategy not in PARALLEL_STRATEGIES:
        # One worker, pinned to the GPUs its runs use (ids renumbered in the worker, see run.pinned_devices).
        return [serial_slot(config.device.accelerator, devices)]
    slots = packed_slots(worker_slots(config.device.accelerator, devices), config.launch.runs_per_gpu)
    per_unit = config.launch.gpus_per_task or 1
    gpu_slots = [slot for slot in slots if slot is not None]
    if per_unit > 1 and len(gpu_slots) == len(slots):
        if len(slots) < per_unit:
            raise UsageError(
                f"--gpus_per_task {per_unit} needs at least {per_unit} GPUs; {len(slots)} given by --devices"
            )
        return [
            [gpu for slot in gpu_slots[i : i + per_unit] for gpu in slot]
            for i in range(0, len(gpu_slots) - per_unit + 1, per_unit)
        ]
    return list(slots)


def gpus_per_unit(config: Config, devices: TrainerDevices) -> int:
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
    launch = config.launch
    gpus = gpus_per_unit(config, devices)
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


def container_spec(
    config: Config, task: Any = None, which: Which = shutil.which, run: Run = subprocess.run
) -> ContainerSpec | None:
    """The image every worker runs in, or None; ``task`` is the one preflight loaded (loaded here only when
    the caller has none, as on a resume). ``which``/``run`` answer for PATH and the runtime (doctor's fakes)."""

    if not config.container.container_image:
        return None
    if task is None:
        task = load_task(config.data.task)
    return ContainerSpec.from_config(
        config.container,
        artifact_dir=config.logging.artifact_dir,
        task=task,
        task_name=config.data.task,
        gpu=config.device.accelerator in ("gpu", "cuda"),
        which=which,
        run=run,
    )
