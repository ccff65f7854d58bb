"""The keyword arguments of the Python API (commands/api.py): one per flag, with the flag's type and default.

These declarations are the signatures an editor, `help()` and mypy show for `nestling.run`, `cv`, `tune` and
`doctor` (`plan_keywords`) and for `nestling.retrain` (`retrain_keywords`); api.py gives them their bodies. They
are written out (not built at import time) so that static tools see them, and tests/unit/commands/
test_api_keywords.py keeps them equal to the option groups of core/options/config.py: same names in the same order,
the same defaults, each type the flag's, widened where Python has more ways to say it (a path, a tuple for a list,
a dict for `hp`). A value reaches the options as the command line reads it (config.config_from_keywords).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

from nestling.core.options.choices import (
    Accelerator,
    FoldMethod,
    LauncherName,
    MultiScoreStrategy,
    Pruner,
    RuntimeName,
    Sampler,
    ScoreEpoch,
    Select,
    TestSplit,
    WandbMode,
)

if TYPE_CHECKING:
    from nestling.core.ml.task import Task

RetrainEpochs = Literal["best", "max"] | int


def plan_keywords(
    task: str | type[Task] | Task | None = None,
    *,
    config: str | PathLike[str] | None = None,
    # data: Which task, and how its samples are split into test set and folds.
    fold_method: FoldMethod = "kfold",
    n_folds: int = 5,
    fold_seed: int = 42,
    test_split: TestSplit = "none",
    test_fraction: float = 0.2,
    test_regions: Sequence[str] | str = (),
    # training: What one training run does.
    max_epochs: int = 10,
    early_stopping_patience: int = 0,
    hp: Mapping[str, Any] | Sequence[str] | str = (),
    fold: int = 0,
    # cv: Seeds per fold and how the runs of a cross-validation are scored.
    n_seeds: int = 3,
    seeds: Sequence[int] = (),
    scoring_metric: Sequence[str] | str = (),
    multi_score_strategy: MultiScoreStrategy = "geometric",
    score_epoch: ScoreEpoch = "last",
    # tune: How hyperparameter sets are drawn.
    hpconfig: str | PathLike[str] | None = None,
    n_trials: int = 10,
    sampler: Sampler = "random",
    tune_seed: int = 0,
    select: Select = "score",
    retrain: bool = False,
    pruner: Pruner = "none",
    reduction_factor: int = 3,
    min_epochs: int = 1,
    # device: Passed to Lightning's Trainer; cv-parallel / tune-parallel run work units side by side instead.
    accelerator: Accelerator = "auto",
    strategy: str = "auto",
    devices: Sequence[int | str] | int | str = ("auto",),
    num_nodes: int = 1,
    # logging: Where artifacts go and how a run is named and tracked.
    artifact_dir: str | PathLike[str] = "artifacts",
    name: str | None = None,
    wandb_project: str | None = None,
    wandb_entity: str | None = None,
    wandb_mode: WandbMode = "auto",
    quiet: bool = False,
    keep_checkpoints: str = "all",
    # launch: How work units are executed: in local worker processes, or as submitit jobs (local or SLURM).
    launcher: LauncherName = "local",
    dry_run: bool = False,
    detach: bool = False,
    wait: bool = False,
    partition: str | None = None,
    time_min: int = 60,
    cpus_per_task: int = 2,
    mem_gb: float = 8.0,
    gpus_per_task: int | None = None,
    account: str | None = None,
    qos: str | None = None,
    constraint: str | None = None,
    array_parallelism: int = 64,
    slurm_setup: Sequence[str] | str = (),
    slurm_extra: Sequence[str] | str = (),
    submitit_dir: str | PathLike[str] | None = None,
    max_array_size: int | None = None,
    runs_per_task: int = 1,
    expected_run_s: float | None = None,
    runs_per_gpu: int = 1,
    steal: bool = True,
    signal_delay_s: int = 90,
    fail_fast: int = 3,
    max_retries: int = 2,
    stage_dir: str | None = None,
    resume: str | None = None,
    force: bool = False,
    snapshot_code: bool = True,
    snapshot_max_mb: float = 50.0,
    # container: Run every worker inside an image (apptainer/singularity .sif, or docker/podman).
    container_image: str | PathLike[str] | None = None,
    container_runtime: RuntimeName = "auto",
    container_bind: Sequence[str] | str = (),
    container_env: Sequence[str] | str = (),
    container_env_pass: Sequence[str] | str = (),
    container_args: str = "",
) -> None:
    """The options of `nestling run | cv | tune` as keyword arguments. `task` (or the first argument): a built-in
    name, "module:attr", or a Task class or instance; `config`: a TOML/YAML file of options (keywords win over
    it, as flags do). Lists take a sequence or one value; `hp` also a dict ({"lr": 0.01} is --hp lr=0.01)."""


def retrain_keywords(
    dir: str | PathLike[str],
    *,
    cv: str | None = None,
    select: Select | None = None,
    retrain_epochs: RetrainEpochs | None = None,
    n_seeds: int | None = None,
    seeds: Sequence[int] | None = None,
    accelerator: Accelerator | None = None,
    strategy: str | None = None,
    devices: Sequence[int | str] | int | str | None = None,
    num_nodes: int | None = None,
    wandb_project: str | None = None,
    wandb_entity: str | None = None,
    quiet: bool = False,
    launcher: LauncherName | None = None,
    dry_run: bool | None = None,
    wait: bool | None = None,
    partition: str | None = None,
    time_min: int | None = None,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    gpus_per_task: int | None = None,
    account: str | None = None,
    qos: str | None = None,
    constraint: str | None = None,
    array_parallelism: int | None = None,
    slurm_setup: Sequence[str] | str | None = None,
    slurm_extra: Sequence[str] | str | None = None,
    submitit_dir: str | PathLike[str] | None = None,
    max_array_size: int | None = None,
    runs_per_task: int | None = None,
    expected_run_s: float | None = None,
    runs_per_gpu: int | None = None,
    steal: bool | None = None,
    signal_delay_s: int | None = None,
    fail_fast: int | None = None,
    max_retries: int | None = None,
    stage_dir: str | None = None,
    snapshot_code: bool | None = None,
    snapshot_max_mb: float | None = None,
    container_image: str | PathLike[str] | None = None,
    container_runtime: RuntimeName | None = None,
    container_bind: Sequence[str] | str | None = None,
    container_env: Sequence[str] | str | None = None,
    container_env_pass: Sequence[str] | str | None = None,
    container_args: str | None = None,
) -> None:
    """The options of `nestling retrain TUNE_DIR`: `cv` (default: the tune's best by `select`), `retrain_epochs`
    (best: the median best epoch of its runs; max: the tune's max_epochs; or a number); every other option
    defaults to the tune's value (None), as the command line's flags do."""
