"""Frozen option groups, parsed with simple-parsing from a config file and the command line.

Precedence: built-in defaults < `--config FILE` (flat keys named like the flags, task hyperparameters in a
`[hparams]` table, a tune's space in a `[hyperparameters]` table) < command-line flags; `--hp KEY=VALUE` overrides one hyperparameter. Unknown keys are an error that
suggests the closest valid key. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import simple_parsing as sp
from simple_parsing.helpers import list_field

from nestling.core.errors import UsageError
from nestling.core.options import config_files as files
from nestling.core.options.choices import (  # noqa: F401 - re-exported: the option groups' choices
    DDP_LIKE,
    EPOCH_PRUNERS,
    PARALLEL_STRATEGIES,
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
    check_choice,
)


def repeatable(text: str) -> Any:
    """An option given any number of times, each time with one or more values: `--hp a=1 --hp b=2 c=3`."""
    return sp.field(default_factory=list, action="append", type=str, nargs="+", required=False, help=text)


@dataclass(frozen=True)
class Data:
    """Which task, and how its samples are split into test set and folds."""

    task: str = "synthetic-segmentation"  # built-in name or "module:attr" (Task instance, class or factory)
    fold_method: FoldMethod = "kfold"  # how samples are assigned to folds
    n_folds: int = 5  # number of folds (validation splits)
    fold_seed: int = 42  # seed of the fold assignment; independent of the run seeds
    test_split: TestSplit = "none"  # which samples are held out for testing
    test_fraction: float = 0.2  # fraction of samples held out for testing with --test_split random
    test_regions: list[str] = list_field()  # regions held out for testing with --test_split region


@dataclass(frozen=True)
class Training:
    """What one training run does."""

    max_epochs: int = 10  # epochs per training run
    early_stopping_patience: int = 0  # epochs without improvement of the first scoring metric; 0 = off
    hp: list[str] = repeatable("KEY=VALUE, repeatable")
    fold: int = 0  # the fold `nestling run` trains on


@dataclass(frozen=True)
class CrossValidation:
    """Seeds per fold and how the runs of a cross-validation are scored."""

    n_seeds: int = 3  # seeds 42, 21, 69, then more drawn reproducibly
    seeds: list[int] = list_field()  # explicit seeds (overrides --n_seeds)
    scoring_metric: list[str] = list_field()  # NAME[:higher|:lower]; default: the task's, else val/JaccardIndex val/Recall
    multi_score_strategy: MultiScoreStrategy = "geometric"  # how several scoring metrics combine into one score
    score_epoch: ScoreEpoch = "last"  # whose metrics are scored: the last epoch's, or the best checkpoint's epoch


@dataclass(frozen=True)
class Tune:
    """How hyperparameter sets are drawn."""

    hpconfig: str | None = None  # TOML/YAML file with a [hyperparameters] table; default: the --config file's
    n_trials: int = 10  # hyperparameter sets to cross-validate (clipped to the grid size with --sampler grid)
    sampler: Sampler = "random"  # how trials are drawn: random/grid up front, tpe when a worker starts each trial
    tune_seed: int = 0  # same seed, same trials
    select: Select = "score"  # what ranks trials and picks the best: the cv score, or lcb = mean - sem of its runs
    retrain: bool = False  # then `nestling retrain` the best on train + val and test it (SLURM: a job after the collector)
    pruner: Pruner = "none"  # stop hopeless trials: after a fold (median, successive-halving, wilcoxon) or between epochs (asha, hyperband)
    reduction_factor: int = 3  # asha/hyperband: eta; a rung keeps the best 1/eta of the trials that reached it
    min_epochs: int = 1  # asha/hyperband: the first rung; rungs at min_epochs * eta^k up to --max_epochs


@dataclass(frozen=True)
class Device:
    """Passed to Lightning's Trainer; cv-parallel / tune-parallel run work units side by side instead."""

    accelerator: Accelerator = "auto"  # the Trainer's accelerator
    strategy: str = "auto"  # a Lightning strategy, or cv-parallel | tune-parallel
    devices: list[str] = list_field("auto")  # auto, a count (2), or ids (0 2 5)
    num_nodes: int = 1  # nodes of one run (multi-node DDP needs --launcher slurm)


@dataclass(frozen=True)
class Logging:
    """Where artifacts go and how a run is named and tracked."""

    artifact_dir: str = "artifacts"  # root of every tune, cv and run directory
    name: str | None = None  # tune/cv/run name; generated when omitted
    wandb_project: str | None = None  # enables Weights & Biases; offline runs upload later with `nestling sync`
    wandb_entity: str | None = None
    wandb_mode: WandbMode = "auto"  # auto: online where W&B answers at a run's start, else offline; WANDB_MODE wins
    quiet: bool = False  # no progress bar, no tables
    keep_checkpoints: str = "all"  # tune: keep the checkpoints of the K best trials (all | none | K), drop the others'


@dataclass(frozen=True)
class Launch:
    """How work units are executed: in local worker processes, or as submitit jobs (local or SLURM)."""

    launcher: LauncherName = "local"  # where work units run
    dry_run: bool = False  # write and print the job scripts, submit nothing
    detach: bool = False  # local: return at once; a background supervisor runs the sweep (nestling stop ends it)
    wait: bool = False  # with slurm: block with a progress bar until every job ended
    partition: str | None = None
    time_min: int = 60  # time limit of one job, minutes
    cpus_per_task: int = 2  # CPUs of one array task
    mem_gb: float = 8.0  # memory of one array task (per node)
    gpus_per_task: int | None = None  # default: the devices of one work unit (0 with --accelerator cpu)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 64  # at most this many array tasks run at once
    slurm_setup: list[str] = list_field()  # shell lines run before the worker, e.g. "module load cuda"
    slurm_extra: list[str] = repeatable("KEY=VALUE sbatch options")
    submitit_dir: str | None = None  # default: {plan dir}/_submitit
    max_array_size: int | None = None  # default: MaxArraySize from `scontrol show config`, else 1001
    runs_per_task: int = 1  # pack this many runs into one worker process (short runs)
    expected_run_s: float | None = None  # expected seconds per run: choose --runs_per_task automatically
    runs_per_gpu: int = 1  # cv/tune-parallel: this many runs share one GPU at a time, each capped at 1/K of its memory
    steal: bool = True  # slurm: a finished task takes over units whose tasks still wait in the queue
    signal_delay_s: int = 90  # SLURM sends USR2 this long before the time limit: checkpoint + requeue
    fail_fast: int = 3  # stop starting runs once this many failed with the same error and none succeeded; 0 = off
    max_retries: int = 2  # retries per run after a node fault, a transient I/O error or an OOM on a shared GPU
    stage_dir: str | None = None  # node-local dir where Task.stage copies data once per node; default $TMPDIR or /tmp
    resume: str | None = None  # NAME of a tune/cv to continue: reruns failed, missing and lost runs only
    force: bool = False  # with --resume: accept changed options and code (training/device options apply to reruns)
    snapshot_code: bool = True  # copy the task's code into the plan at submit; every worker imports the task from it
    snapshot_max_mb: float = 50.0  # refuse a larger code snapshot: data and checkpoints do not belong in it


@dataclass(frozen=True)
class Container:
    """Run every worker inside an image (apptainer/singularity .sif, or docker/podman)."""

    container_image: str | None = None
    container_runtime: RuntimeName = "auto"  # auto: apptainer/singularity for .sif, else docker/podman
    container_bind: list[str] = repeatable("SRC[:DST[:ro]]")
    container_env: list[str] = repeatable("KEY=VALUE, or KEY to pass this shell's value by name (secrets)")
    container_env_pass: list[str] = repeatable("host variables to pass in besides the defaults: NAME or glob")
    container_args: str = ""  # extra runtime flags


GROUPS: dict[str, type] = {
    "data": Data,
    "training": Training,
    "cv": CrossValidation,
    "tune": Tune,
    "device": Device,
    "logging": Logging,
    "launch": Launch,
    "container": Container,
}
FILE_ONLY_KEYS = ("hparams", "hyperparameters")  # tables a config file may hold besides the flags
APPEND_FIELDS = ("hp", "slurm_extra", "container_bind", "container_env", "container_env_pass")


@dataclass(frozen=True)
class Config:
    """Everything one invocation needs; `hparams` are the task hyperparameter overrides (file + --hp)."""

    data: Data = field(default_factory=Data)
    training: Training = field(default_factory=Training)
    cv: CrossValidation = field(default_factory=CrossValidation)
    tune: Tune = field(default_factory=Tune)
    device: Device = field(default_factory=Device)
    logging: Logging = field(default_factory=Logging)
    launch: Launch = field(default_factory=Launch)
    container: Container = field(default_factory=Container)
    hparams: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def option_names() -> dict[str, str]:
    """Flat option name -> group attribute."""
    return {f.name: group for group, cls in GROUPS.items() for f in dataclasses.fields(cls)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--config {str(path)!r} does not exist; pass the path of a TOML or YAML file")
    try:
        data = files.read(p)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {str(path)!r} cannot be read: {exc}") from exc
    except files.MalformedFile as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            f"--config {str(path)!r} is not valid {p.suffix.lstrip('.') or 'TOML'}: {first}"
        ) from exc
    if not isinstance(data, dict):
        raise UsageError(f"--config {str(path)!r} must hold a table of options, not {type(data).__name__}")
    return data


def suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(valid))}"


def _check_file_values(data: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    """Split a flat config-file table into per-group defaults, refusing unknown keys, wrong types and choices."""
    names = option_names()
    per_group: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    for key, value in data.items():
        if key in FILE_ONLY_KEYS:
            continue
        if key not in names:
            raise UsageError(
                f"unknown key {key!r} in {path}: {suggest(key, list(names) + list(FILE_ONLY_KEYS))}"
            )
        group = names[key]
        per_group[group][key] = _coerce(key, value, typing.get_type_hints(GROUPS[group])[key], path)
    hparams = data.get("hparams", {})
    if not isinstance(hparams, dict):
        raise UsageError(f"[hparams] in {path} must be a table of KEY = VALUE, not {hparams!r}")
    return per_group


def _coerce(key: str, value: Any, ftype: Any, source: str) -> Any:
    """Give a config-file value the type of its flag, or say which type (or which values) it needs."""
    origin, args = typing.get_origin(ftype), typing.get_args(ftype)
    if origin is Literal:
        return check_choice(key, _coerce(key, value, str, source), args, source)
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(key, v, args[0], source) for v in items]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        ftype = next(a for a in args if a is not type(None))
    base = getattr(ftype, "__name__", str(ftype))
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base == "str":
            if isinstance(value, (dict, list)):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"{key} = {value!r} in {source} must be of type {base}; e.g. {key} = {_example(base)}"
        ) from None
    return value


def _example(base: str) -> str:
    return {"bool": "true", "int": "3", "float": "0.5", "str": '"text"'}.get(base, "...")


# What `--help` shows after a flag (simple-parsing's default is the dest, `DATA.N_FOLDS`, or the type, `[[str]]`);
# flags not named here get one from their type (TYPE_METAVARS), flags with choices list them.
METAVARS = {
    "task": "NAME|MODULE:ATTR", "test_regions": "REGION", "hp": "KEY=VALUE", "seeds": "SEED",
    "scoring_metric": "METRIC[:lower]", "hpconfig": "FILE", "strategy": "STRATEGY", "devices": "DEVICE",
    "artifact_dir": "DIR", "name": "NAME", "wandb_project": "PROJECT", "wandb_entity": "ENTITY",
    "partition": "PARTITION", "time_min": "MINUTES", "mem_gb": "GB", "account": "ACCOUNT", "qos": "QOS",
    "constraint": "FEATURE", "slurm_setup": "LINE", "slurm_extra": "KEY=VALUE", "submitit_dir": "DIR",
    "expected_run_s": "SECONDS", "signal_delay_s": "SECONDS", "resume": "NAME", "container_image": "IMAGE",
    "container_bind": "SRC[:DST[:ro]]", "container_env": "KEY[=VALUE]", "container_env_pass": "NAME",
    "container_args": "FLAGS",
}  # fmt: skip
TYPE_METAVARS = {int: "N", float: "X", str: "TEXT"}


class _Parser(sp.ArgumentParser):
    """argparse checks `choices` (the Literal options) here; route that through check_choice's one-line error."""

    def _preprocessing(self, *args: Any, **kwargs: Any) -> None:
        """simple-parsing adds the dataclass fields here; then each gets a metavar a reader understands."""
        super()._preprocessing(*args, **kwargs)
        for action in self._actions:
            if not action.option_strings or action.choices is not None or action.nargs == 0:
                continue
            name = action.dest.rpartition(".")[2]
            if action.metavar == "bool":  # --retrain [true|false], --noretrain
                action.metavar = "true|false"
            elif name in METAVARS:
                action.metavar = METAVARS[name]
            elif action.type in TYPE_METAVARS:
                action.metavar = TYPE_METAVARS[action.type]

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            name = action.option_strings[0].lstrip("-") if action.option_strings else action.dest
            check_choice(name, value, tuple(action.choices))


def build_parser(
    prog: str, description: str, defaults: dict[str, dict[str, Any]] | None = None
) -> _Parser:
    parser = _Parser(
        prog=prog,
        description=description,
        add_config_path_arg=False,
        allow_abbrev=False,  # `--max_epoch` must be refused with a suggestion, not read as --max_epochs
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML or YAML file of options: flat keys named like the flags, an [hparams] table of task "
        "hyperparameters, and for nestling tune a [hyperparameters] table (the space, instead of --hpconfig)",
    )
    defaults = defaults or {}
    for group, cls in GROUPS.items():
        parser.add_arguments(cls, dest=group, default=cls(**defaults.get(group, {})))
    return parser


def _flatten(values: list[Any]) -> list[str]:
    out: list[str] = []
    for v in values:
        if isinstance(v, list):
            out.extend(_flatten(v))
        else:
            out.append(str(v))
    return out


def parse_hp(items: list[str], source: str = "--hp") -> dict[str, Any]:
    """KEY=VALUE strings -> dict, values read as JSON/TOML literals where they parse (1, 0.5, true, "x")."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise UsageError(f"{source} {item!r} is not KEY=VALUE; e.g. {source} lr=0.001")
        out[key.strip()] = parse_literal(raw.strip())
    return out


def parse_literal(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        lowered = raw.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return raw


def parse_config(argv: list[str], prog: str = "nestling", description: str = "") -> Config:
    """Command line (+ optional config file) -> Config. Raises UsageError for bad input."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    file_data, defaults = _file_options(known.config)
    parser = build_parser(prog, description, defaults)
    ns = _parse_or_raise(parser, argv)
    groups = {g: getattr(ns, g) for g in GROUPS}
    # append-style options: argparse appends flag values to the file's list; flatten the nesting.
    for group, cls in GROUPS.items():
        updates = {
            f.name: _flatten(getattr(groups[group], f.name))
            for f in dataclasses.fields(cls)
            if f.name in APPEND_FIELDS
        }
        if updates:
            groups[group] = dataclasses.replace(groups[group], **updates)
    return _assemble(groups, file_data, known.config)


def config_from_keywords(keywords: Mapping[str, Any]) -> Config:
    """Keyword arguments named like the flags (the Python API's) -> Config, with the command line's precedence
    (defaults < the `config` file < keywords), checks and one-line errors. A value is read as the command line
    reads the words of its flag (`n_folds=3` as `--n_folds 3`; a list as several words; `hp` also as a dict);
    `None` keeps the default, or the config file's value."""
    config_file = keywords.get("config")
    config_file = None if config_file is None else str(config_file)
    file_data, defaults = _file_options(config_file)
    names = option_names()
    values: dict[str, dict[str, Any]] = {group: dict(defaults.get(group, {})) for group in GROUPS}
    for key, value in keywords.items():
        if key == "config" or value is None:
            continue
        if key not in names:
            raise UsageError(f"unknown option {key!r}: {suggest(key, [*names, 'config'])}")
        group = values[names[key]]
        typed = keyword_value(key, value, typing.get_type_hints(GROUPS[names[key]])[key])
        group[key] = [*group.get(key, []), *typed] if key in APPEND_FIELDS else typed  # as repeated flags do
    return _assemble({g: cls(**values[g]) for g, cls in GROUPS.items()}, file_data, config_file)


def keyword_value(key: str, value: Any, ftype: Any) -> Any:
    """One keyword's value with the type of its flag, converted from its words as argparse converts them, so a
    value the command line refuses is refused with the same line."""
    origin, args = typing.get_origin(ftype), typing.get_args(ftype)
    if origin in (typing.Union, types.UnionType):  # X | None: None was the default, dropped by the caller
        return keyword_value(key, value, next(a for a in args if a is not type(None)))
    if origin is list:
        if key == "hp" and isinstance(value, Mapping):
            value = [f"{k}={json.dumps(v)}" for k, v in value.items()]
        words = [value] if isinstance(value, (str, int, float, os.PathLike)) else list(value)
        return [keyword_value(key, word, args[0]) for word in words]
    if origin is Literal:
        return check_choice(key, str(value), args)
    if ftype is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("true", "false"):
            return str(value).strip().lower() == "true"
        raise UsageError(f"argument --{key}: Boolean value expected for argument, received {str(value)!r} (see --help)")
    if ftype in (int, float) and not isinstance(value, bool):
        try:
            return ftype(str(value))
        except ValueError:
            pass
    elif ftype is str:
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    raise UsageError(_argparse_hint(f"argument --{key}: invalid {ftype.__name__} value: {str(value)!r}"))


def _file_options(config_file: str | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The --config file's table and, checked, its values per option group (both empty without a file)."""
    if not config_file:
        return {}, {}
    file_data = read_config_file(config_file)
    return file_data, _check_file_values(file_data, config_file)


def _assemble(groups: dict[str, Any], file_data: dict[str, Any], config_file: str | None) -> Config:
    """The option groups + the hyperparameters: the file's [hparams] table, then --hp."""
    hparams = dict(file_data.get("hparams", {}))
    hparams.update(parse_hp(groups["training"].hp))
    return Config(**groups, hparams=hparams, config_file=config_file)


def _parse_or_raise(parser: sp.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse prints usage and exits; we want one line naming the value, through UsageError."""
    parser.exit_on_error = False

    def error(message: str) -> typing.NoReturn:  # argparse calls this for bad flags and values
        raise UsageError(_argparse_hint(message))

    parser.error = error  # type: ignore[method-assign]
    try:
        ns, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise UsageError(_argparse_hint(str(exc))) from exc
    if unknown:
        flag = next((u for u in unknown if u.startswith("-")), unknown[0])
        valid = [f"--{n}" for n in option_names()] + ["--config"]
        raise UsageError(f"unknown option {flag!r}: {suggest(flag.split('=')[0], valid)}")
    return ns


def _argparse_hint(message: str) -> str:
    return f"{message} (see --help)"


def config_from_dict(data: dict[str, Any]) -> Config:
    """The inverse of Config.to_dict (plan.json keeps it): unknown keys from newer versions are ignored."""
    groups = {}
    for group, cls in GROUPS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        groups[group] = cls(**{k: v for k, v in data.get(group, {}).items() if k in names})
    return Config(**groups, hparams=dict(data.get("hparams", {})), config_file=data.get("config_file"))


def explicit_options(argv: list[str]) -> set[str]:
    """The option names given on the command line (`--max_epochs 10`, `--max_epochs=10`), whatever their value.

    Resume compares these with the saved plan even when they equal the default (a plan made with --max_epochs 1,
    resumed with --max_epochs 10, the default, is a change)."""
    known = option_names()
    found = set()
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("--"):
            key = arg[2:].split("=", 1)[0].replace("-", "_")
            if key in known:
                found.add(key)
    return found


def given_options(argv: list[str]) -> set[str]:
    """The option names this invocation sets: its command-line flags (explicit_options) and the keys of its
    `--config` file, whatever their values. A resume takes every other launch option from the saved plan."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    given = explicit_options(argv)
    if known.config:
        given |= set(read_config_file(known.config)) & set(option_names())
    return given
