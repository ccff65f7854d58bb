"""The values options with a fixed set of choices may take, as `Literal` types: `--help` lists them and
`check_choice` (below) refuses anything else, for the command line and the config file alike. Apart from config.py
so that modules that only need a choice (scoring, space, the device rule) do not import simple-parsing."""

from __future__ import annotations

from typing import Any, Literal

from nestling.core.errors import UsageError

# Options with a fixed set of values: `--help` lists them and `check_choice` refuses anything else, for the command
# line and the config file alike. The first value is the default (and the example in the error).
FoldMethod = Literal["kfold", "stratified", "shuffle", "region", "region-stratified", "none"]
TestSplit = Literal["none", "random", "region"]
MultiScoreStrategy = Literal["geometric", "harmonic", "arithmetic", "min"]
ScoreEpoch = Literal["last", "best"]
Sampler = Literal["random", "grid", "tpe"]
Pruner = Literal["none", "median", "successive-halving", "wilcoxon", "asha", "hyperband"]
EPOCH_PRUNERS = ("asha", "hyperband")  # pruners that stop runs between epochs (execute/search/rungs.py)
FOLD_PRUNERS = ("median", "successive-halving", "wilcoxon")  # pruners that stop a trial between folds (pruners.py)
Select = Literal["score", "lcb"]
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"]
LauncherName = Literal["local", "submitit-local", "slurm"]
RuntimeName = Literal["auto", "apptainer", "singularity", "docker", "podman"]
WandbMode = Literal["auto", "online", "offline"]

PARALLEL_STRATEGIES = ("cv-parallel", "tune-parallel")
DDP_LIKE = ("ddp", "ddp_find_unused_parameters_true", "ddp_spawn", "fsdp", "deepspeed", "auto")


def check_choice(name: str, value: Any, choices: tuple[str, ...], source: str | None = None) -> str:
    """The one check of an option with fixed values; `source` is the config file, None for the command line."""
    if value in choices:
        return str(value)
    allowed = ", ".join(choices)
    if source is None:
        raise UsageError(f"--{name} {value!r} is not one of {allowed}; e.g. --{name} {choices[0]}")
    raise UsageError(f'{name} = {value!r} in {source} is not one of {allowed}; e.g. {name} = "{choices[0]}"')
