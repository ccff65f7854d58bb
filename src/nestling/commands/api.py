"""The commands as Python functions: `nestling.run`, `nestling.cv`, `nestling.tune`, `nestling.report`,
`nestling.retrain`, and `nestling.load` for a tree that exists.

One source of truth for the options: keyword arguments are named like the flags (`n_folds=3`, `max_epochs=1`,
`hp={"lr": 0.01}`) and become the argv the command line parses (core/options/config.py's dataclasses), so defaults, checks,
config files and error messages are the command line's; bad input raises `UsageError` with the same one-line text
instead of exiting. Each call returns a `Result` with the tables as polars frames.

`task=` takes a name or "module:attr" spec as `--task` does, or a Task class or instance. Workers are separate
processes, so a task reaches them by name only: a class must be importable (`module:Class`, not defined in
`__main__`, a notebook, or a function); an instance must be that class's default (`Class()`) or a module-level
object (`module:NAME`, found by identity); anything else is refused with a UsageError that says how to make it importable.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.commands import cli
from nestling.commands.retrain import then_retrain
from nestling.commands.start import execute
from nestling.core.errors import UsageError
from nestling.core.lazy import lazy_module
from nestling.core.options.config import APPEND_FIELDS, GROUPS, option_names, suggest
from nestling.core.tree import naming
from nestling.plan.store import find_plan_root, load_plan

if TYPE_CHECKING:
    import polars as pl

    from nestling.read import collect
    from nestling.read.collect import CvSummary
else:
    collect = lazy_module("nestling.read.collect")


@dataclass(frozen=True)
class Result:
    """A run, cv or tune on disk: where it is, how the command ended, its tables (read when asked for)."""

    kind: str  # "run" | "cv" | "tune"
    name: str
    dir: Path
    exit_code: int = 0  # the command line's: 0 completed, 1 every run failed (or fail-fast stopped it), 130 stopped

    @property
    def run_infos(self) -> pl.DataFrame:
        """One row per run (a tune's: every run of every cv, with its hyperparameters)."""
        import polars as pl

        return pl.read_parquet(self.dir / naming.RUN_INFOS)

    @property
    def tune_infos(self) -> pl.DataFrame | None:
        """One row per configuration of a tune; None for a cv or a run."""
        import polars as pl

        path = self.dir / naming.TUNE_INFOS
        return pl.read_parquet(path) if self.kind == "tune" and path.is_file() else None

    @property
    def best(self) -> CvSummary | None:
        """The configuration the command line calls best (a tune's first collect.ranked cv; a cv itself): its `cv_name`,
        `score`, `score_is_unstable`, `hparams` and per-run `table`. None for a single run or an empty tune."""
        if self.kind == "run":
            return None

        cvs = collect.ranked(collect.collect(self.dir, write=False).cvs)
        return cvs[0] if cvs else None

    @property
    def report_html(self) -> Path:
        """Where `nestling report` writes the offline report of this tree."""
        return self.dir / naming.REPORT


def run(task: Any = None, /, **options: Any) -> Result:
    """`nestling run`: train one run (fold `fold` of `fold_method`, the first seed)."""
    return _execute("run", task, options)


def cv(task: Any = None, /, **options: Any) -> Result:
    """`nestling cv`: cross-validate one hyperparameter set (n_folds x seeds runs)."""
    return _execute("cv", task, options)


def tune(task: Any = None, /, **options: Any) -> Result:
    """`nestling tune`: sample `n_trials` sets from `hpconfig` (or the `config` file's space), cross-validate each."""
    return _execute("tune", task, options)


def report(dir: str | Path, **options: Any) -> Result:
    """`nestling report DIR`: the offline report of a tune, cv or run dir (`Result.report_html`)."""
    code = _command("report", dir, options)
    return dataclasses.replace(load(dir), exit_code=code)


def retrain(dir: str | Path, **options: Any) -> Result:
    """`nestling retrain TUNE_DIR`: retrain the selected configuration on all training data and test it; the
    Result of the retrain (the cv `{tune}-final` inside the tune), or of the tune when none was written."""
    code = _command("retrain", dir, options)
    tune = load(dir)
    final = naming.final_dir(tune.dir, tune.name)
    return dataclasses.replace(load(final) if (final / naming.PLAN).is_file() else tune, exit_code=code)


def load(dir: str | Path) -> Result:
    """The Result of a tune, cv or run dir that exists (any dir inside it finds its plan)."""

    root = find_plan_root(Path(dir))
    plan = load_plan(root)
    return Result(plan.kind, plan.name, root)


def _execute(kind: str, task: Any, options: dict[str, Any]) -> Result:
    if task is not None:
        if "task" in options:
            raise UsageError("task given twice (positional and task=); pass it once")
        options = {"task": task, **options}

    done = execute(kind, to_argv(options), then_retrain)  # as the command line: `tune --retrain` chains it
    if done.root is None or done.name is None:  # a dry run: nothing on disk
        raise UsageError(f"nestling.{kind}(dry_run=True) prints what would run and returns no result; drop dry_run")
    return Result(kind, done.name, done.root, done.exit_code)


def _command(command: str, dir: str | Path, options: dict[str, Any]) -> int:
    """Another command of the command line, through the CLI's own dispatch (UsageError raised, not exit 2);
    its exit code."""

    if command not in cli.COMMANDS:
        raise UsageError(f"nestling.{command}() needs the `nestling {command}` command, which this version lacks")
    argv = [command, str(dir)]
    known = option_names()
    for key, value in options.items():
        if key in known or key == "config":  # an option of the config groups: exactly as run/cv/tune take it
            argv += to_argv({key: value})
        elif value is True:
            argv.append(f"--{key}")
        elif isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif value is not None and value is not False:
            argv.append(f"--{key}={value}")
    return cli._dispatch(argv)


def to_argv(options: dict[str, Any]) -> list[str]:
    """Keyword arguments named like the flags -> the command line's argv (parsed by config.parse_config)."""
    names = option_names()
    argv: list[str] = []
    for key, value in options.items():
        if key == "config":
            argv.append(f"--config={value}")
            continue
        if key not in names:
            raise UsageError(f"unknown option {key!r}: {suggest(key, [*names, 'config'])}")
        if key == "task":
            value = task_spec(value)
        if value is None:
            continue  # the default
        flag = f"--{key}"
        ftype = typing.get_type_hints(GROUPS[names[key]])[key]
        if key == "hp" and isinstance(value, dict):
            value = [f"{k}={json.dumps(v)}" for k, v in value.items()]
        if key in APPEND_FIELDS:
            items = [value] if isinstance(value, str) else list(value)
            for item in items:
                argv += [flag, str(item)]
        elif typing.get_origin(ftype) is list:
            items = [value] if isinstance(value, (str, int, float)) else list(value)
            if items:
                argv += [flag, *map(str, items)]
        elif isinstance(value, bool):
            argv.append(f"{flag}={str(value).lower()}")
        else:
            argv.append(f"{flag}={value}")
    return argv


def task_spec(task: Any) -> str:
    """A task as `--task` names it: a string as is; a Task class or instance as the "module:attr" a worker can
    import (refused when it cannot, see the module docstring)."""
    if isinstance(task, (str, Path)):
        return str(task)
    cls = task if inspect.isclass(task) else type(task)
    module, qualname = cls.__module__, cls.__qualname__
    if module == "__main__" or "." in qualname:
        where = "__main__ (a script or notebook)" if module == "__main__" else f"{module}.{qualname}"
        raise UsageError(
            f"task {qualname} is defined in {where}, which the worker processes cannot import; define it at module "
            "level in a .py file on PYTHONPATH (or installed) and pass the class or 'module:Class'"
        )
    if not inspect.isclass(task) and not _is_default(task, cls):
        bound = _module_level_name(task, module)
        if bound is None:
            raise UsageError(
                f"task {qualname}(...) holds state a worker process cannot receive (it would import "
                f"{module}:{qualname} and call {qualname}()); bind the instance to a module-level name in an "
                "importable module and pass it, or pass a zero-argument factory as 'module:attr'"
            )
        return bound
    return f"{module}:{qualname}"


def _module_level_name(task: Any, home: str) -> str | None:
    """"module:NAME" of a module-level variable holding this very object (its class's module first)."""
    modules = [sys.modules[home]] if home in sys.modules else []
    modules += [m for name, m in list(sys.modules.items()) if name not in (home, "__main__") and m is not None]
    for mod in modules:
        for attr, value in list(getattr(mod, "__dict__", {}).items()):
            if value is task and not attr.startswith("_"):
                return f"{mod.__name__}:{attr}"
    return None


def _is_default(task: Any, cls: type) -> bool:
    """Whether `cls()` rebuilds `task` (same attributes): then the class spec reaches workers as the same task."""
    try:
        fresh = cls()
        same = vars(fresh) == vars(task)
    except Exception:  # no zero-argument constructor, attributes that do not compare, no __dict__
        return False
    return same is True
