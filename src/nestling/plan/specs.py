"""Plan + configuration -> the RunSpec of each run: the only place specs are derived, and the device rule
(which Trainer devices and strategy a run gets) lives here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nestling.core.errors import UsageError
from nestling.core.host.devices import TrainerDevices, parse_devices
from nestling.core.lazy import lazy_module
from nestling.core.options.choices import PARALLEL_STRATEGIES
from nestling.core.tree import naming
from nestling.core.tree.run_spec import RunSpec
from nestling.plan.model import Plan

if TYPE_CHECKING:  # config (simple-parsing) is imported where a plan is made or derived, not where one is read
    from nestling.core.options import config as options_config
    from nestling.core.options.config import Config
else:
    options_config = lazy_module("nestling.core.options.config")

# Strategies whose launcher starts the other ranks by running the command again (or, for spawn, needs picklable
# state): a worker re-run would wait on its stdin forever. With several devices they become their fork variant.
FORK_VARIANTS = {
    "auto": "ddp_fork",
    "ddp": "ddp_fork",
    "ddp_spawn": "ddp_fork",
    **{
        f"{base}_find_unused_parameters_{flag}": f"ddp_fork_find_unused_parameters_{flag}"
        for base in ("ddp", "ddp_spawn")
        for flag in ("true", "false")
    },
}
NO_FORK_VARIANT = ("fsdp", "deepspeed")  # prefixes of strategies that re-run the command and have no fork variant


def devices_per_unit(config: Config) -> int:
    """Devices of one parallel work unit (--gpus_per_task under cv-parallel/tune-parallel), else 1."""

    if config.device.strategy in PARALLEL_STRATEGIES and config.launch.gpus_per_task:
        return config.launch.gpus_per_task
    return 1


def trainer_devices(
    config: Config, devices: TrainerDevices, devices_per_unit: int = 1, kind: str = "cv"
) -> tuple[str, Any]:
    """(strategy, devices) for the Trainer of a run: the device rule, the same for planning and a forced resume.

    Parallel strategies give each unit its own devices. A strategy that re-launches the script would start the
    worker again (the seed's warning), so several devices use its fork variant (ddp -> ddp_fork,
    ddp_find_unused_parameters_true -> ddp_fork_find_unused_parameters_true, ...); fsdp and deepspeed have none
    and are refused. Only a single run on SLURM keeps its strategy: there SLURM starts one task per device.
    """

    strategy = config.device.strategy
    if strategy in PARALLEL_STRATEGIES:
        return ("ddp_fork" if devices_per_unit > 1 else "auto"), devices_per_unit
    if kind == "run" and config.launch.launcher == "slurm":
        return strategy, devices
    if strategy.startswith(NO_FORK_VARIANT):
        where = "in nestling cv/tune" if kind != "run" else "on the local launcher"
        raise UsageError(
            f"--strategy {strategy} starts its processes by running the command again, which a nestling worker "
            f"cannot do {where}; use --strategy ddp (run as ddp_fork) or a single run with --launcher slurm"
        )
    count = len(devices) if isinstance(devices, list) else devices
    several = config.device.num_nodes > 1 or (isinstance(count, int) and count > 1)
    if several and strategy in FORK_VARIANTS:
        return FORK_VARIANTS[strategy], devices
    return strategy, devices


def run_specs(plan: Plan, config: Config | None = None) -> list[RunSpec]:
    """Every run's RunSpec, from the plan and the configuration it runs with (the plan's own options unless
    given: a forced resume passes the changed configuration and gets the respecified runs)."""
    if config is None:
        config = options_config.config_from_dict(plan.options)
    devices = parse_devices(config.device.devices)
    strategy, run_devices = trainer_devices(config, devices, devices_per_unit(config), plan.kind)
    tune_name = {"tune": plan.name, "retrain": naming.tune_of_final(plan.name)}.get(plan.kind)
    splits_file = str(plan.root / naming.SPLITS)
    evaluates = plan.kind != "tune"  # a tune's runs select on val; its retrain, a cv or a run are tested
    code = str(plan.root / plan.provenance.code) if plan.provenance is not None and plan.provenance.code else None
    return [
        RunSpec(
            run_name=run.run_name,
            run_id=run.run_id,
            run_dir=str(run.dir),
            cv_name=cv.cv_name,
            tune_name=tune_name,
            fold=run.fold,
            seed=run.seed,
            hparams=cv.hparams,
            task=config.data.task,
            splits_file=splits_file,
            max_epochs=config.training.max_epochs,
            early_stopping_patience=config.training.early_stopping_patience,
            scoring_metric=list(config.cv.scoring_metric),
            multi_score_strategy=config.cv.multi_score_strategy,
            score_epoch=config.cv.score_epoch,
            accelerator=config.device.accelerator,
            strategy=strategy,
            devices=run_devices,
            num_nodes=config.device.num_nodes,
            wandb_project=config.logging.wandb_project,
            wandb_entity=config.logging.wandb_entity,
            wandb_mode=config.logging.wandb_mode,
            retrain=plan.kind == "retrain",
            trial=cv.hp_index if plan.adaptive else None,
            test=evaluates,
            keep_best=evaluates or config.cv.score_epoch == "best",
            code=code,
        )
        for cv in plan.cvs
        for run in cv.runs
    ]
