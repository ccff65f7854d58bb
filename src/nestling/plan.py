"""Tune / cv / run -> a Plan: every run's name, id, directory, fold, seed and hyperparameters, fixed up front.

Pure: the functions here return data and touch nothing; `artifacts.write_plan` puts a plan on disk and the
launchers execute it. Inputs (task metadata, folds, trials) come from `preflight.py`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling import naming
from nestling.config import PARALLEL_STRATEGIES, Config
from nestling.devices import TrainerDevices
from nestling.records import RunSpec

DEFAULT_SEEDS = (42, 21, 69)
WORKER_STARTUP_S = 10.0  # a fresh Python + torch + lightning start on a busy node (measured 2.6-18 s)
STARTUP_SHARE = 0.1  # packing aims to keep start-up under this share of a task's time
RELAUNCHING_STRATEGIES = ("auto", "ddp", "ddp_spawn")  # replaced by ddp_fork inside a cv or tune


@dataclass(frozen=True)
class CvPlan:
    cv_name: str | None  # None for a single run
    hp_index: int | None
    hparams: dict[str, Any]
    dir: Path
    runs: list[RunSpec]


@dataclass(frozen=True)
class Plan:
    kind: str  # "tune" | "cv" | "run"
    name: str
    root: Path  # tune dir, cv dir, or the run dir of a single run
    cvs: list[CvPlan]
    n_folds: int
    options: dict[str, Any]  # the configuration that made this plan, for resume and provenance

    @property
    def runs(self) -> list[RunSpec]:
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


def trainer_devices(config: Config, devices: TrainerDevices, devices_per_unit: int = 1) -> tuple[str, Any]:
    """(strategy, devices) for the Trainer of a run inside a cv or tune.

    Parallel strategies give each unit its own devices. DDP that relaunches the script would start the whole
    worker again (the seed's warning), so several devices within a cv/tune use ddp_fork instead.
    """
    strategy = config.device.strategy
    if strategy in PARALLEL_STRATEGIES:
        return ("ddp_fork" if devices_per_unit > 1 else "auto"), devices_per_unit
    count = len(devices) if isinstance(devices, list) else devices
    several = config.device.num_nodes > 1 or (isinstance(count, int) and count > 1)
    if several and strategy in RELAUNCHING_STRATEGIES:
        return "ddp_fork", devices
    return strategy, devices


def _spec(
    config: Config,
    *,
    run_name: str,
    run_id: str,
    run_dir: Path,
    cv_name: str | None,
    tune_name: str | None,
    fold: int,
    seed: int,
    hparams: dict[str, Any],
    splits_file: Path,
    strategy: str,
    devices: Any,
) -> RunSpec:
    return RunSpec(
        run_name=run_name,
        run_id=run_id,
        run_dir=str(run_dir),
        cv_name=cv_name,
        tune_name=tune_name,
        fold=fold,
        seed=seed,
        hparams=hparams,
        task=config.data.task,
        splits_file=str(splits_file),
        max_epochs=config.training.max_epochs,
        early_stopping_patience=config.training.early_stopping_patience,
        scoring_metric=list(config.cv.scoring_metric),
        multi_score_strategy=config.cv.multi_score_strategy,
        score_epoch=config.cv.score_epoch,
        accelerator=config.device.accelerator,
        strategy=strategy,
        devices=devices,
        num_nodes=config.device.num_nodes,
        wandb_project=config.logging.wandb_project,
        wandb_entity=config.logging.wandb_entity,
    )


def plan_cv(
    config: Config,
    *,
    artifact_dir: Path,
    cv_name: str,
    hparams: dict[str, Any],
    n_folds: int,
    devices: TrainerDevices,
    splits_file: Path,
    tune_name: str | None = None,
    hp_index: int | None = None,
    rng: random.Random | None = None,
    devices_per_unit: int = 1,
) -> CvPlan:
    """One run per (fold, seed), folds outer, seeds inner."""
    strategy, run_devices = trainer_devices(config, devices, devices_per_unit)
    cv_dir = naming.cv_dir(artifact_dir, cv_name, tune_name)
    runs = []
    seeds = seeds_for(config.cv.n_seeds, config.cv.seeds)
    for fold in range(n_folds):
        for seed in seeds:
            run_name = naming.run_name_for(cv_name, fold, seed)
            run_id = naming.new_run_id(rng)
            runs.append(
                _spec(
                    config,
                    run_name=run_name,
                    run_id=run_id,
                    run_dir=naming.run_dir_in(cv_dir, run_name, run_id),
                    cv_name=cv_name,
                    tune_name=tune_name,
                    fold=fold,
                    seed=seed,
                    hparams=hparams,
                    splits_file=splits_file,
                    strategy=strategy,
                    devices=run_devices,
                )
            )
    return CvPlan(cv_name=cv_name, hp_index=hp_index, hparams=hparams, dir=cv_dir, runs=runs)


def plan_tune(
    config: Config,
    *,
    name: str,
    trials: list[dict[str, Any]],
    n_folds: int,
    devices: TrainerDevices,
    rng: random.Random | None = None,
    devices_per_unit: int = 1,
) -> Plan:
    artifact_dir = Path(config.logging.artifact_dir)
    root = naming.tune_dir(artifact_dir, name)
    splits_file = root / naming.SPLITS
    cvs = [
        plan_cv(
            config,
            artifact_dir=artifact_dir,
            cv_name=naming.cv_name_for(name, index),
            hparams=hparams,
            n_folds=n_folds,
            devices=devices,
            splits_file=splits_file,
            tune_name=name,
            hp_index=index,
            rng=rng,
            devices_per_unit=devices_per_unit,
        )
        for index, hparams in enumerate(trials)
    ]
    return Plan("tune", name, root, cvs, n_folds, config.to_dict())


def plan_single_cv(
    config: Config,
    *,
    name: str,
    hparams: dict[str, Any],
    n_folds: int,
    devices: TrainerDevices,
    rng: random.Random | None = None,
    devices_per_unit: int = 1,
) -> Plan:
    artifact_dir = Path(config.logging.artifact_dir)
    root = naming.cv_dir(artifact_dir, name)
    cv = plan_cv(
        config,
        artifact_dir=artifact_dir,
        cv_name=name,
        hparams=hparams,
        n_folds=n_folds,
        devices=devices,
        splits_file=root / naming.SPLITS,
        rng=rng,
        devices_per_unit=devices_per_unit,
    )
    return Plan("cv", name, root, [cv], n_folds, config.to_dict())


def plan_run(
    config: Config,
    *,
    name: str,
    hparams: dict[str, Any],
    n_folds: int,
    devices: TrainerDevices,
    rng: random.Random | None = None,
) -> Plan:
    artifact_dir = Path(config.logging.artifact_dir)
    run_id = naming.new_run_id(rng)
    root = naming.run_dir(artifact_dir, name, run_id)
    seed = seeds_for(1, config.cv.seeds)[0]
    spec = _spec(
        config,
        run_name=name,
        run_id=run_id,
        run_dir=root,
        cv_name=None,
        tune_name=None,
        fold=config.training.fold,
        seed=seed,
        hparams=hparams,
        splits_file=root / naming.SPLITS,
        strategy=config.device.strategy,
        devices=devices,
    )
    cv = CvPlan(cv_name=None, hp_index=None, hparams=hparams, dir=root, runs=[spec])
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
    return [[r.run_dir for r in cv.runs] for cv in plan.cvs]
