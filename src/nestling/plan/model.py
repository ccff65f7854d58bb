"""Tune / cv / run -> a Plan: every run's name, id, directory, fold, seed and hyperparameters, fixed up front;
and Plan + configuration -> the RunSpec of each run (the only place specs are derived).

Pure: the functions here return data and touch nothing; `artifacts.write_plan` puts a plan on disk and the
launchers execute it. Inputs (task metadata, folds, trials) come from `preflight.py`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.errors import UsageError
from nestling.core.host.devices import TrainerDevices, parse_devices
from nestling.core.tree import naming
from nestling.core.tree.run_spec import RunSpec

if TYPE_CHECKING:  # config (simple-parsing) is imported where a plan is made or derived, not where one is read
    from nestling.core.options.config import Config

DEFAULT_SEEDS = (42, 21, 69)
WORKER_STARTUP_S = 10.0  # a fresh Python + torch + lightning start on a busy node (measured 2.6-18 s)
STARTUP_SHARE = 0.1  # packing aims to keep start-up under this share of a task's time
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


@dataclass(frozen=True)
class PlannedRun:
    """One run's identity and place in the tree; its full RunSpec is derived by `plan.run_specs`."""

    run_name: str
    run_id: str
    fold: int
    seed: int
    dir: Path


@dataclass(frozen=True)
class CvPlan:
    cv_name: str | None  # None for a single run
    hp_index: int | None
    hparams: dict[str, Any]
    dir: Path
    runs: list[PlannedRun]


@dataclass(frozen=True)
class Plan:
    """A tune, cv or single run, fixed up front: the one plan model. `artifacts.write_plan` and
    `artifacts.load_plan` put it on disk and give the same value back; the launchers run it, resume, status and the
    collector read it back from plan.json. Its runs' full RunSpecs come from `run_specs`.
    """

    kind: str  # "tune" | "cv" | "run" | "retrain" (a tune's selected configuration on train + val, tested)
    name: str
    root: Path  # tune dir, cv dir, or the run dir of a single run
    cvs: list[CvPlan]
    n_folds: int
    options: dict[str, Any]  # the configuration that made this plan (Config.to_dict), for resume and provenance
    # adaptive search (--sampler tpe): the space as optuna distribution JSON; each cv's sampled hparams are drawn
    # when a worker starts it (study.py), so its CvPlan holds only the fixed ones. None: drawn up front.
    space: dict[str, str] | None = None

    @property
    def adaptive(self) -> bool:
        return self.space is not None

    @property
    def runs(self) -> list[PlannedRun]:
        return [run for cv in self.cvs for run in cv.runs]


@dataclass(frozen=True)
class WorkUnit:
    """Runs executed in series by one worker (one array task on SLURM)."""

    index: int
    run_dirs: list[str]


def seeds_for(n_seeds: int, explicit: list[int]) -> list[int]:
    """Explicit seeds, else 42, 21, 69, then more drawn reproducibly."""
    if explicit:
        return list(explicit)
    seeds = list(DEFAULT_SEEDS[:n_seeds])
    rng = random.Random(0)
    while len(seeds) < n_seeds:
        s = rng.randrange(1, 100_000)
        if s not in seeds:
            seeds.append(s)
    return seeds


def devices_per_unit(config: Config) -> int:
    """Devices of one parallel work unit (--gpus_per_task under cv-parallel/tune-parallel), else 1."""
    from nestling.core.options.config import PARALLEL_STRATEGIES

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
    from nestling.core.options.config import PARALLEL_STRATEGIES

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
        from nestling.core.options.config import config_from_dict

        config = config_from_dict(plan.options)
    devices = parse_devices(config.device.devices)
    strategy, run_devices = trainer_devices(config, devices, devices_per_unit(config), plan.kind)
    tune_name = {"tune": plan.name, "retrain": naming.tune_of_final(plan.name)}.get(plan.kind)
    splits_file = str(plan.root / naming.SPLITS)
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
        )
        for cv in plan.cvs
        for run in cv.runs
    ]


def plan_cv(
    config: Config,
    *,
    artifact_dir: Path,
    cv_name: str,
    hparams: dict[str, Any],
    tune_name: str | None = None,
    hp_index: int | None = None,
    n_folds: int,
    rng: random.Random | None = None,
) -> CvPlan:
    """One run per (fold, seed), folds outer, seeds inner."""
    cv_dir = naming.cv_dir(artifact_dir, cv_name, tune_name)
    runs = []
    seeds = seeds_for(config.cv.n_seeds, config.cv.seeds)
    for fold in range(n_folds):
        for seed in seeds:
            run_name = naming.run_name_for(cv_name, fold, seed)
            run_id = naming.new_run_id(rng)
            runs.append(PlannedRun(run_name, run_id, fold, seed, naming.run_dir_in(cv_dir, run_name, run_id)))
    return CvPlan(cv_name=cv_name, hp_index=hp_index, hparams=hparams, dir=cv_dir, runs=runs)


def plan_tune(
    config: Config,
    *,
    name: str,
    trials: list[dict[str, Any]],
    n_folds: int,
    rng: random.Random | None = None,
    space: dict[str, str] | None = None,
) -> Plan:
    """`space` (distribution JSON) makes the tune adaptive: `trials` then hold only the fixed hparams."""
    artifact_dir = Path(config.logging.artifact_dir)
    cvs = [
        plan_cv(
            config,
            artifact_dir=artifact_dir,
            cv_name=naming.cv_name_for(name, index),
            hparams=hparams,
            n_folds=n_folds,
            tune_name=name,
            hp_index=index,
            rng=rng,
        )
        for index, hparams in enumerate(trials)
    ]
    return Plan("tune", name, naming.tune_dir(artifact_dir, name), cvs, n_folds, config.to_dict(), space)


def plan_single_cv(
    config: Config,
    *,
    name: str,
    hparams: dict[str, Any],
    n_folds: int,
    rng: random.Random | None = None,
) -> Plan:
    artifact_dir = Path(config.logging.artifact_dir)
    cv = plan_cv(config, artifact_dir=artifact_dir, cv_name=name, hparams=hparams, n_folds=n_folds, rng=rng)
    return Plan("cv", name, cv.dir, [cv], n_folds, config.to_dict())


def plan_retrain(
    config: Config,
    *,
    tune_root: Path,
    tune_name: str,
    hparams: dict[str, Any],
    hp_index: int | None,
    rng: random.Random | None = None,
) -> Plan:
    """A tune's retrain: one cv named `{tune}-final` inside the tune dir, one split (train + val / test), one run
    per seed of `config` (whose max_epochs is the retrain's epoch count)."""
    name = naming.final_name(tune_name)
    root = naming.final_dir(tune_root, tune_name)
    runs = []
    for seed in seeds_for(config.cv.n_seeds, config.cv.seeds):
        run_name = naming.run_name_for(name, 0, seed)
        run_id = naming.new_run_id(rng)
        runs.append(PlannedRun(run_name, run_id, 0, seed, naming.run_dir_in(root, run_name, run_id)))
    cv = CvPlan(cv_name=name, hp_index=hp_index, hparams=hparams, dir=root, runs=runs)
    return Plan("retrain", name, root, [cv], 1, config.to_dict())


def plan_run(
    config: Config,
    *,
    name: str,
    hparams: dict[str, Any],
    n_folds: int,
    rng: random.Random | None = None,
) -> Plan:
    run_id = naming.new_run_id(rng)
    root = naming.run_dir(Path(config.logging.artifact_dir), name, run_id)
    run = PlannedRun(name, run_id, config.training.fold, seeds_for(1, config.cv.seeds)[0], root)
    cv = CvPlan(cv_name=None, hp_index=None, hparams=hparams, dir=root, runs=[run])
    return Plan("run", name, root, [cv], n_folds, config.to_dict())


def auto_runs_per_task(expected_run_s: float, n_runs: int, parallel_slots: int) -> int:
    """Runs per array task so that the worker start-up costs at most ~10% of a task, while every slot stays busy.

    K = ceil(start-up / (share * run time)), capped at ceil(n_runs / slots) so packing never idles a GPU.
    """
    wanted = math.ceil(WORKER_STARTUP_S / (STARTUP_SHARE * max(expected_run_s, 1e-3)))
    cap = max(1, math.ceil(n_runs / max(1, parallel_slots)))
    return max(1, min(wanted, cap))


def work_units(cv_run_dirs: list[list[str]], strategy: str, runs_per_task: int = 1) -> list[WorkUnit]:
    """Group run dirs (given per cv) into units of work by parallel strategy.

    cv-parallel: one unit per run (or per `runs_per_task` runs); tune-parallel: one unit per cv, its runs in
    series; otherwise one unit for everything.
    """
    if strategy == "cv-parallel":
        dirs = [d for cv in cv_run_dirs for d in cv]
        k = max(1, runs_per_task)
        groups = [dirs[i : i + k] for i in range(0, len(dirs), k)]
    elif strategy == "tune-parallel":
        groups = [list(cv) for cv in cv_run_dirs]
    else:
        groups = [[d for cv in cv_run_dirs for d in cv]]
    return [WorkUnit(i, g) for i, g in enumerate(g for g in groups if g)]


def run_dirs_per_cv(plan: Plan) -> list[list[str]]:
    return [[str(r.dir) for r in cv.runs] for cv in plan.cvs]
