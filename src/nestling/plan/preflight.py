"""Check everything that can be known before anything is created, and turn the config into a Plan.

Every problem is a UsageError (one line, exit 2) raised before a directory exists or a job is submitted.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nestling.core.errors import UsageError
from nestling.core.host.devices import TrainerDevices, parse_devices
from nestling.core.lazy import lazy_module
from nestling.core.ml.scoring import DEFAULT_SCORING, parse_scoring_metrics
from nestling.core.ml.space import (
    ADAPTIVE_SAMPLERS,
    check_space_keys,
    load_space,
    parse_space,
    sample_trials,
    to_json,
)
from nestling.core.ml.task import Split, Task, declared_scoring_metrics, load_task
from nestling.core.options.config import (
    DDP_LIKE,
    EPOCH_PRUNERS,
    PARALLEL_STRATEGIES,
    Config,
    read_config_file,
)
from nestling.core.tree import naming
from nestling.plan.build import plan_tune, plan_untuned
from nestling.plan.model import Plan
from nestling.plan.settings import checkpoints_to_keep
from nestling.plan.specs import devices_per_unit, trainer_devices

if TYPE_CHECKING:
    from nestling.core.ml import folds
else:
    folds = lazy_module("nestling.core.ml.folds")


@dataclass(frozen=True)
class Prepared:
    """A checked plan plus what writing and launching it needs."""

    plan: Plan
    splits: list[Split]
    devices: TrainerDevices
    task: Task


def prepare(
    config: Config,
    kind: str,
    rng: random.Random | None = None,
    described: Callable[[], Task | None] | None = None,
) -> Prepared:
    """`described`: gives the task as a prestarted worker described it (task.DescribedTask), or None; the task is
    then not imported here (issue 15 #1). Without it, or when it gives None, the task is loaded here."""
    if config.logging.name is not None:  # cheap checks first: a typo should not wait for the task to load
        naming.validate_name(config.logging.name, f"--name ({kind} name)")
    _check_combinations(config, kind)
    check_artifact_dir(Path(config.logging.artifact_dir))
    config = _absolute_artifact_dir(config)
    devices = parse_devices(config.device.devices)
    _check_devices(config, kind, devices)
    trainer_devices(config, devices, devices_per_unit(config), kind)  # refuses strategies a worker cannot run

    if config.cv.scoring_metric:
        parse_scoring_metrics(config.cv.scoring_metric)
    task = (described() if described is not None else None) or load_task(config.data.task)
    config = _with_scoring_metrics(config, task)
    defaults = task.default_hparams()
    _check_hparams(config.hparams, defaults, "--hp / [hparams]")
    base_hparams = {**defaults, **config.hparams}
    splits = _splits(task, config, kind)
    n_folds = len(splits)
    if kind == "run" and not 0 <= config.training.fold < n_folds:
        raise UsageError(
            f"--fold {config.training.fold} does not exist: the fold method gives folds 0..{n_folds - 1}"
        )
    artifact_dir = Path(config.logging.artifact_dir)
    if kind == "tune":
        trials, space_source, space = _trials(config, defaults)
        sampled = sorted(set(config.hparams) & ({k for t in trials for k in t} | set(space or {})))
        if sampled:
            raise UsageError(
                f"hyperparameter {sampled[0]!r} is both fixed (--hp / [hparams]) and sampled ({space_source}); "
                "remove one"
            )
        name = _name(config, artifact_dir, "tune")
        plan = plan_tune(
            config,
            name=name,
            trials=[{**base_hparams, **t} for t in trials],
            n_folds=n_folds,
            rng=rng,
            space=space,
        )
    else:
        untuned: Literal["cv", "run"] = "cv" if kind == "cv" else "run"
        name = _name(config, artifact_dir, untuned)
        plan = plan_untuned(untuned, config, name=name, hparams=base_hparams, n_folds=n_folds, rng=rng)
    return Prepared(plan=plan, splits=splits, devices=devices, task=task)


def _with_scoring_metrics(config: Config, task: Task) -> Config:
    """The config with the scoring metrics the plan stores: --scoring_metric when given, else the task's declared
    ones, else scoring.DEFAULT_SCORING. Runs and the collector read them from the plan."""

    if config.cv.scoring_metric:
        return config
    declared = declared_scoring_metrics(task)
    if declared is not None:
        try:
            parse_scoring_metrics(declared)
        except UsageError as exc:
            raise UsageError(f"--task {config.data.task!r} declares bad scoring_metrics: {exc}") from None
    metrics = declared if declared is not None else list(DEFAULT_SCORING)
    return dataclasses.replace(config, cv=dataclasses.replace(config.cv, scoring_metric=metrics))


def _check_combinations(config: Config, kind: str) -> None:
    """Combinations and ranges; the options with fixed values were checked when the config was parsed."""
    strategy = config.device.strategy
    if strategy in PARALLEL_STRATEGIES:
        if kind == "run":
            raise UsageError(
                f"--strategy {strategy} is for nestling cv/tune; a single run uses a Lightning strategy (e.g. ddp)"
            )
        if kind == "cv" and strategy == "tune-parallel":
            raise UsageError(
                "--strategy tune-parallel needs nestling tune; for a cv use --strategy cv-parallel"
            )
        if config.device.num_nodes > 1:
            raise UsageError(
                f"--strategy {strategy} with --num_nodes {config.device.num_nodes}: parallel runs do not use DDP; "
                "use --num_nodes 1, or nestling run for a multi-node run"
            )
    if kind == "tune" and config.tune.retrain and config.data.test_split == "none":
        raise UsageError(
            "--retrain tests the retrained model on the test split, and this tune has none: add --test_split random "
            "(--test_fraction 0.2) or --test_split region --test_regions R1 R2"
        )
    if kind == "tune" and config.tune.pruner in ("median", "successive-halving") and strategy == "cv-parallel":
        raise UsageError(
            f"--pruner {config.tune.pruner} needs the folds of a trial to run in order, which --strategy cv-parallel "
            "does not do; use --strategy tune-parallel (trials side by side) or --pruner none"
        )
    if kind == "tune" and config.tune.pruner in EPOCH_PRUNERS:
        _check_epoch_pruner(config)
    if kind != "run" and config.device.num_nodes > 1:  # array tasks get one node: Trainer and sbatch would disagree
        raise UsageError(
            f"--num_nodes {config.device.num_nodes} is for nestling run (one multi-node run); the runs of a {kind} "
            "get one node each: use --num_nodes 1"
        )
    for flag, value, low in (
        ("--max_epochs", config.training.max_epochs, 1),
        ("--n_seeds", config.cv.n_seeds, 1),
        ("--n_trials", config.tune.n_trials, 1),
        ("--num_nodes", config.device.num_nodes, 1),
        ("--early_stopping_patience", config.training.early_stopping_patience, 0),
        ("--runs_per_task", config.launch.runs_per_task, 1),
        ("--time_min", config.launch.time_min, 1),
        ("--array_parallelism", config.launch.array_parallelism, 1),
        ("--fail_fast", config.launch.fail_fast, 0),
        ("--runs_per_gpu", config.launch.runs_per_gpu, 1),
        ("--max_retries", config.launch.max_retries, 0),
    ):
        if value < low:
            raise UsageError(f"{flag} {value} must be at least {low}")
    _check_runs_per_gpu(config)
    keep = checkpoints_to_keep(config.logging.keep_checkpoints)
    if keep is not None and kind != "tune":
        raise UsageError(
            f"--keep_checkpoints {config.logging.keep_checkpoints} ranks the trials of a tune; a {kind} keeps every "
            "checkpoint (drop --keep_checkpoints, or remove checkpoints yourself)"
        )
    if config.launch.stage_dir is not None and not config.launch.stage_dir.strip():
        raise UsageError("--stage_dir '' is empty: give a node-local directory, e.g. --stage_dir /local/scratch")
    expected = config.launch.expected_run_s
    if expected is not None and expected <= 0:
        raise UsageError(
            f"--expected_run_s {expected} must be a positive number of seconds, e.g. --expected_run_s 30"
        )
    if len(set(config.cv.seeds)) != len(config.cv.seeds):
        raise UsageError(f"--seeds {' '.join(map(str, config.cv.seeds))} repeats a seed; give distinct seeds")
    if config.device.num_nodes > 1 and config.launch.launcher != "slurm":
        raise UsageError(
            f"--num_nodes {config.device.num_nodes} needs --launcher slurm (multi-node DDP runs through SLURM)"
        )
    check_job_resources(config)


def check_job_resources(config: Config) -> None:
    """What one submitit/SLURM job asks for (the local launcher reads none of it); resume checks it again."""
    launch = config.launch
    if launch.launcher == "local":
        return
    if launch.max_array_size is not None and launch.max_array_size < 1:
        raise UsageError(f"--max_array_size {launch.max_array_size} must be at least 1")
    if launch.mem_gb <= 0:
        raise UsageError(f"--mem_gb {launch.mem_gb} must be positive")
    if not 0 < launch.signal_delay_s < launch.time_min * 60:
        raise UsageError(
            f"--signal_delay_s {launch.signal_delay_s} must be between 0 and the time limit ({launch.time_min * 60} s); "
            "e.g. --signal_delay_s 90 with --time_min 60"
        )
    if launch.cpus_per_task < 1:
        raise UsageError(f"--cpus_per_task {launch.cpus_per_task} must be at least 1")


def check_artifact_dir(path: Path) -> None:
    """The artifact dir, or the nearest of its parents that exists, must be a directory (not a file)."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return
        if candidate.exists() or candidate.is_symlink():
            what = "--artifact_dir" if candidate == path else f"--artifact_dir {str(path)!r}: its parent"
            raise UsageError(
                f"{what} {str(candidate)!r} exists and is not a directory: choose another --artifact_dir "
                "(e.g. --artifact_dir artifacts)"
            )


def _absolute_artifact_dir(config: Config) -> Config:
    """Plan under the resolved artifact dir: every run dir, splits file and spec then means the same from any
    working directory (a worker in a container image starts in a bound dir, not the submitting one)."""
    resolved = str(Path(config.logging.artifact_dir).resolve())
    return dataclasses.replace(config, logging=dataclasses.replace(config.logging, artifact_dir=resolved))


def _check_epoch_pruner(config: Config) -> None:
    """--pruner asha|hyperband: the rungs min_epochs * eta^k must fit below --max_epochs."""
    tune, max_epochs = config.tune, config.training.max_epochs
    if tune.reduction_factor < 2:
        raise UsageError(
            f"--reduction_factor {tune.reduction_factor} must be at least 2 (a rung keeps the best 1/eta of its "
            "trials); e.g. --reduction_factor 3"
        )
    if tune.min_epochs < 1:
        raise UsageError(f"--min_epochs {tune.min_epochs} must be at least 1 (the epochs of the first rung)")
    if tune.min_epochs > max_epochs:
        raise UsageError(
            f"--min_epochs {tune.min_epochs} is larger than --max_epochs {max_epochs}: the first rung would never "
            f"be reached; use --min_epochs {max(1, max_epochs // 9)} or raise --max_epochs"
        )


def _check_runs_per_gpu(config: Config) -> None:
    """Packing K runs on one GPU is for runs of one device each: not for multi-device units, DDP or CPUs."""
    k = config.launch.runs_per_gpu
    if k == 1:
        return
    if config.device.strategy not in PARALLEL_STRATEGIES:
        raise UsageError(
            f"--runs_per_gpu {k} packs parallel runs of one GPU each; --strategy {config.device.strategy!r} gives "
            "each run whole devices (or DDP): use --strategy cv-parallel or tune-parallel, or --runs_per_gpu 1"
        )
    if (config.launch.gpus_per_task or 1) > 1:
        raise UsageError(
            f"--runs_per_gpu {k} with --gpus_per_task {config.launch.gpus_per_task}: packed runs use one GPU each; "
            "use --gpus_per_task 1, or --runs_per_gpu 1 for multi-device runs"
        )
    if config.device.accelerator == "cpu":
        raise UsageError(
            f"--runs_per_gpu {k} is for GPUs; with --accelerator cpu raise --devices for more parallel CPU workers"
        )


def _check_devices(config: Config, kind: str, devices: TrainerDevices) -> None:
    nodes = config.device.num_nodes
    if nodes > 1 and config.device.strategy not in DDP_LIKE:
        raise UsageError(
            f"--strategy {config.device.strategy!r} cannot span {nodes} nodes; use a DDP-like strategy "
            f"({', '.join(s for s in DDP_LIKE if s != 'auto')}), e.g. --strategy ddp"
        )
    if nodes > 1 and devices == "auto":
        raise UsageError(
            f"--num_nodes {nodes} needs a device count per node (SLURM starts one task per device): e.g. --devices 4"
        )
    if config.device.num_nodes > 1 and isinstance(devices, list):
        raise UsageError(
            f"--devices {' '.join(map(str, devices))} is a list of ids, which several nodes cannot share; "
            f"give a count per node, e.g. --devices {len(devices)}"
        )


def _check_hparams(values: dict[str, Any], defaults: dict[str, Any], source: str) -> None:
    """Fixed hyperparameters must be keys of the task's defaults, each of a kind its default has (issue 21 #11: a
    value the task cannot use would otherwise fail every run at run time)."""
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise UsageError(
            f"hyperparameter {unknown[0]!r} ({source}) is not accepted by the task; accepted: {', '.join(sorted(defaults))}"
        )
    for key, value in values.items():
        default, wanted, given = defaults[key], _kind(defaults[key]), _kind(value)
        if wanted is None or value is None or given == wanted:
            continue  # a None default takes anything
        example = f"""'"{value}"'""" if wanted == "text" else json.dumps(default)
        raise UsageError(
            f"hyperparameter {key}={value!r} ({source}) is {given or type(value).__name__}, but the task's default "
            f"{key}={default!r} is {wanted}: e.g. --hp {key}={example}"
        )


HP_KINDS = ((bool, "a boolean"), ((int, float), "a number"), (str, "text"), (list, "a list"), (dict, "a table"))


def _kind(value: Any) -> str | None:
    """The kind of a hyperparameter value as --hp reads it (JSON); ints and floats are one kind, numbers."""
    return next((name for types, name in HP_KINDS if isinstance(value, types)), None)  # bool first: True is an int


def _splits(task: Task, config: Config, kind: str) -> list[Split]:
    d = config.data
    return folds.make_splits(
        task.metadata(),
        fold_method=d.fold_method,
        n_folds=d.n_folds,
        fold_seed=d.fold_seed,
        test_split=d.test_split,
        test_fraction=d.test_fraction,
        test_regions=list(d.test_regions),
    )


def _trials(
    config: Config, defaults: dict[str, Any]
) -> tuple[list[dict[str, Any]], str, dict[str, str] | None]:
    """The sampled trials, where their space came from (for errors): --hpconfig, else --config's table, and for an
    adaptive sampler the space itself (distribution JSON; its trials are then empty, drawn when they start)."""

    file_data = read_config_file(config.config_file) if config.config_file and not config.tune.hpconfig else {}
    if config.tune.hpconfig:
        space, source = load_space(config.tune.hpconfig), "--hpconfig"
    elif "hyperparameters" in file_data:
        space = parse_space(file_data["hyperparameters"], source=str(config.config_file))
        source = f"[hyperparameters] in --config {config.config_file}"
    else:
        raise UsageError(
            "nestling tune needs a hyperparameter space: --hpconfig FILE with a [hyperparameters] table "
            "(or that table in the --config file)"
        )
    check_space_keys(space, defaults)
    if config.tune.sampler in ADAPTIVE_SAMPLERS:
        return [{} for _ in range(config.tune.n_trials)], source, to_json(space)
    trials = sample_trials(
        space, sampler=config.tune.sampler, n_trials=config.tune.n_trials, seed=config.tune.tune_seed
    )
    return trials, source, None


def _name(config: Config, artifact_dir: Path, kind: str) -> str:
    given = config.logging.name
    if given is not None:
        naming.validate_name(given, f"--name ({kind} name)")
        if kind != "run" and naming.top_dir(artifact_dir, kind, given).exists():
            raise UsageError(
                f"{kind} {given!r} already exists in {artifact_dir}; choose another --name "
                f"(or resume it with nestling {kind} --resume {given})"
            )
        return given
    for _ in range(100):
        name = naming.generate_name()
        if kind == "run" or not naming.top_dir(artifact_dir, kind, name).exists():
            return name
    raise UsageError(f"could not find a free generated name in {artifact_dir}; pass --name")
