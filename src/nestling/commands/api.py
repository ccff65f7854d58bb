"""The commands as Python functions: `nestling.run`, `cv`, `tune`, `retrain`, `report`, `collect`, `status`,
`sync`, `prune_checkpoints`, `replay`, `stop`, `doctor`, and `nestling.load` for a tree that exists.

Each calls the function its command line calls once argv is parsed (commands/start.py, retrain.py, ...), so
defaults, checks, config files and error messages are the command line's: bad input raises `UsageError` with the
same one-line text instead of exiting. Keyword arguments are named like the flags (`n_folds=3`, `max_epochs=1`,
`hp={"lr": 0.01}`); their signatures are declared in api_keywords.py, so an editor, `help()` and mypy list them.
A keyword given counts as given even at its default, as a flag does (it overrides the config file; a resume
compares it with the plan). Each function prints what its command prints; `quiet=True` prints nothing (the
outcome is in what it returns, where the command line's --quiet keeps one line). Plan commands return a `Result`
with the tables as polars frames.

`task=` takes a name or "module:attr" spec as `--task` does, or a Task class or instance. Workers are separate
processes, so a task reaches them by name only: a class must be importable (`module:Class`, not defined in
`__main__`, a notebook, or a function); an instance must be that class's default (`Class()`) or a module-level
object (`module:NAME`, found by identity); anything else is refused with a UsageError that says how to make it importable.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from nestling.commands import api_keywords, detach, start
from nestling.commands import collect as collect_command
from nestling.commands import doctor as doctor_command
from nestling.commands import prune_checkpoints as prune_command
from nestling.commands import replay as replay_command
from nestling.commands import report as report_command
from nestling.commands import retrain as retrain_command
from nestling.commands import status as status_command
from nestling.commands import sync as sync_command
from nestling.core.errors import UsageError
from nestling.core.lazy import lazy_module
from nestling.core.options.choices import Select
from nestling.core.options.config import config_from_keywords, option_names, read_config_file, suggest
from nestling.core.tree import naming
from nestling.plan.store import find_plan_root, load_plan

if TYPE_CHECKING:
    import polars as pl

    from nestling.commands.doctor import Check
    from nestling.commands.prune_checkpoints import Pruned
    from nestling.commands.status import Status
    from nestling.commands.sync import SyncCounts
    from nestling.core.ml.scoring import Spread
    from nestling.read import collect as collector
    from nestling.read.collect import CvSummary
else:
    collector = lazy_module("nestling.read.collect")
    pl = lazy_module("polars")

P = ParamSpec("P")
R = TypeVar("R")
PlanKind = Literal["run", "cv", "tune", "retrain"]


@dataclass(frozen=True)
class Result:
    """A run, cv, tune or retrain on disk: where it is, how the command ended, its tables (read when asked for)."""

    kind: PlanKind
    name: str
    dir: Path
    exit_code: int = 0  # the command line's: 0 completed, 1 every run failed (or fail-fast stopped it), 130 stopped

    @property
    def run_infos(self) -> pl.DataFrame:
        """One row per run (a tune's: every run of every cv, with its hyperparameters)."""
        return pl.read_parquet(self.dir / naming.RUN_INFOS)

    @property
    def tune_infos(self) -> pl.DataFrame | None:
        """One row per configuration of a tune; None for a cv or a run."""
        path = self.dir / naming.TUNE_INFOS
        return pl.read_parquet(path) if self.kind == "tune" and path.is_file() else None

    @property
    def final_infos(self) -> pl.DataFrame | None:
        """A retrain's test metrics: one row per seed, then their mean, std and sem (final_infos.parquet); for a
        tune, those of its retrain. None before a retrain wrote them."""
        root = self._retrain_dir()
        path = None if root is None else root / naming.FINAL_INFOS
        return pl.read_parquet(path) if path is not None and path.is_file() else None

    @property
    def test_score(self) -> Spread | None:
        """The retrained configuration's score on the test split: mean, std and sem over its seeds' run scores (the
        "mean", "std" and "sem" rows of `final_infos`). None for a cv or a run, or before a retrain ran."""
        root = self._retrain_dir()
        if root is None or not (root / naming.PLAN).is_file():
            return None
        return collector.final_score(collector.collect(root, write=False).cvs[0])

    @property
    def best(self) -> CvSummary | None:
        """The configuration the command line calls best (a tune's first collect.ranked cv; a cv itself): its `cv_name`,
        `score`, `score_is_unstable`, `hparams` and per-run `table`. None for a single run or an empty tune."""
        if self.kind == "run":
            return None

        cvs = collector.ranked(collector.collect(self.dir, write=False).cvs)
        return cvs[0] if cvs else None

    @property
    def report_html(self) -> Path:
        """Where `nestling report` writes the offline report of this tree."""
        return self.dir / naming.REPORT

    def _retrain_dir(self) -> Path | None:
        if self.kind == "retrain":
            return self.dir
        return naming.final_dir(self.dir, self.name) if self.kind == "tune" else None


def _keywords_of(declared: Callable[P, None]) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """Give a function taking `**options` the keyword signature `declared` (api_keywords.py): what an editor,
    `help()` and mypy see. The function receives only the keywords the caller gave; an unknown one is a
    UsageError that suggests the closest."""
    signature = inspect.signature(declared)
    names = [name for name, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY]

    def decorate(command: Callable[..., R]) -> Callable[P, R]:
        @functools.wraps(command)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            for key in kwargs:
                if key not in signature.parameters:
                    raise UsageError(f"unknown option {key!r}: {suggest(key, names)}")
            return command(*args, **kwargs)

        returns = inspect.signature(command).return_annotation
        call.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
        return call

    return decorate


@_keywords_of(api_keywords.plan_keywords)
def run(task: Any = None, /, **options: Any) -> Result:
    """`nestling run`: train one run (fold `fold` of `fold_method`, the first seed). Keywords: `plan_keywords`."""
    return _plan_command("run", task, options)


@_keywords_of(api_keywords.plan_keywords)
def cv(task: Any = None, /, **options: Any) -> Result:
    """`nestling cv`: cross-validate one hyperparameter set (n_folds x seeds runs). Keywords: `plan_keywords`."""
    return _plan_command("cv", task, options)


@_keywords_of(api_keywords.plan_keywords)
def tune(task: Any = None, /, **options: Any) -> Result:
    """`nestling tune`: sample `n_trials` sets from `hpconfig` (or the `config` file's space), cross-validate each;
    with `retrain=True`, then retrain the best (`Result.test_score`). Keywords: `plan_keywords`."""
    return _plan_command("tune", task, options)


@_keywords_of(api_keywords.retrain_keywords)
def retrain(dir: str | Path, **options: Any) -> Result:
    """`nestling retrain TUNE_DIR`: train the tune's selected configuration on all its training data and test it;
    the Result of the retrain (the cv `{tune}-final` inside the tune: `final_infos`, `test_score`). Keywords:
    `retrain_keywords`."""
    cv_name, select, epochs = (options.pop(key, None) for key in ("cv", "select", "retrain_epochs"))
    choice = retrain_command.RetrainChoice(cv_name, select, None if epochs is None else str(epochs))
    with _printing(options):
        done = retrain_command.retrain_tune(Path(dir), config_from_keywords(options), _given(options), choice)
    return _result(done, "nestling.retrain(dry_run=True)")


def report(dir: str | Path, *, png: bool = True, quiet: bool = False) -> Result:
    """`nestling report DIR`: the offline report of a tune, cv or run dir (`Result.report_html`), with one PNG per
    figure unless `png=False`."""
    with _printing({"quiet": quiet}):
        print(f"report: {report_command.report_dir(Path(dir), png=png)}")
    return load(dir)


def collect(
    dir: str | Path,
    *,
    select: Select | None = None,
    all_columns: bool = False,
    report: bool = False,
    quiet: bool = False,
) -> Result:
    """`nestling collect DIR`: rebuild the tables of a tune, cv or run dir from its run results and print its
    summary (ranked by `select`; every metric with `all_columns`); with `report`, its report.html too."""
    with _printing({"quiet": quiet}):
        collect_command.collect_tables(Path(dir), select=select, all_columns=all_columns, report=report, quiet=quiet)
    return load(dir)


def status(dir: str | Path, *, show_all: bool = False, quiet: bool = False) -> Status:
    """`nestling status DIR`: the state of every run of a tune, cv or run dir (`Status.runs`, `.counts`), printed
    as the command prints it (every run with `show_all`) unless quiet."""
    found = status_command.read_status(Path(dir))
    with _printing({"quiet": quiet}):
        status_command.print_status(found, show_all=show_all)
    return found


def sync(dir: str | Path, *, dry_run: bool = False, quiet: bool = False) -> SyncCounts:
    """`nestling sync DIR`: upload the offline W&B runs under a tune, cv or run dir (`wandb sync`), each once;
    with `dry_run`, upload nothing (`SyncCounts.pending` lists what would be uploaded)."""
    with _printing({"quiet": quiet}):
        if dry_run:
            pending = sync_command.pending_uploads(Path(dir))
            sync_command.print_pending(pending, Path(dir))
            return sync_command.SyncCounts(pending=pending)
        counts = sync_command.sync_dir(Path(dir))
        sync_command.print_counts(counts, Path(dir))
    return counts


def prune_checkpoints(dir: str | Path, *, keep: int | str, dry_run: bool = False, quiet: bool = False) -> Pruned:
    """`nestling prune-checkpoints DIR --keep K`: remove the checkpoints of a tune's finished trials outside the K
    best (`keep="none"`: of every finished trial); with `dry_run`, remove nothing and say what would go."""
    pruned = prune_command.prune_tune_checkpoints(Path(dir), keep, dry_run=dry_run)
    with _printing({"quiet": quiet}):
        print(pruned.line(str(dir)))
    return pruned


def replay(dir: str | Path, *, pruner: str, quiet: bool = False) -> replay_command.Replay:
    """`nestling replay DIR --pruner P`: re-decide a finished tune under `pruner` from its recorded results, without
    training; returns what P would have saved and chosen, and writes replay-{P}.parquet in the tune dir."""
    replayed = replay_command.replay_tune(Path(dir), pruner)
    with _printing({"quiet": quiet}):
        for line in replayed.lines():
            print(line)
    return replayed


def stop(dir: str | Path, *, timeout: float = detach.STOP_WAIT_S, quiet: bool = False) -> detach.Stopped:
    """`nestling stop DIR`: stop the detached sweep (`detach=True`) of a tune, cv or run dir as Ctrl-C would; wait
    up to `timeout` seconds for its runs in progress to save."""
    with _printing({"quiet": quiet}):
        return detach.stop_sweep(Path(dir), timeout=timeout)


@_keywords_of(api_keywords.plan_keywords)
def doctor(task: Any = None, /, **options: Any) -> list[Check]:
    """`nestling doctor`: check that this machine can run `nestling.tune` (with `hpconfig`) or `nestling.cv` with
    these options: task, plan, artifact dir, container runtime and image, SLURM, W&B. One Check per finding.
    Keywords: `plan_keywords`."""
    config = config_from_keywords(_with_task(task, options))
    checks = doctor_command.run_checks(config)
    with _printing(options):
        print(doctor_command.format_table(checks))
    return checks


def load(dir: str | Path) -> Result:
    """The Result of a tune, cv or run dir that exists (any dir inside it finds its plan)."""

    root = find_plan_root(Path(dir))
    plan = load_plan(root)
    return Result(plan.kind, plan.name, root)  # type: ignore[arg-type]  # plan.json holds one of PlanKind


def _plan_command(kind: PlanKind, task: Any, options: dict[str, Any]) -> Result:
    options = _with_task(task, options)
    with _printing(options):
        done = start.start_plan(kind, config_from_keywords(options), _given(options), retrain_command.then_retrain)
    return _result(done, f"nestling.{kind}(dry_run=True)")


def _with_task(task: Any, options: dict[str, Any]) -> dict[str, Any]:
    if task is not None:
        if "task" in options:
            raise UsageError("task given twice (positional and task=); pass it once")
        options = {"task": task, **options}
    if options.get("task") is not None:
        options = {**options, "task": task_spec(options["task"])}
    return options


def _given(options: dict[str, Any]) -> frozenset[str]:
    """The options this call set (None keeps the default) and the keys of its `config` file: those a resume
    compares with the plan, and the launch options it takes instead of the plan's."""
    given = {key for key, value in options.items() if value is not None and key != "config"}
    if options.get("config") is not None:
        given |= set(read_config_file(options["config"])) & set(option_names())
    return frozenset(given)


def _result(done: start.Executed, call: str) -> Result:
    if done.root is None or done.name is None:  # a dry run: nothing on disk
        raise UsageError(f"{call} prints what would run and returns no result; drop dry_run")
    return Result(done.kind, done.name, done.root, done.exit_code)  # type: ignore[arg-type]  # a plan's kind


@contextlib.contextmanager
def _printing(options: dict[str, Any]) -> Iterator[None]:
    """What a command prints, or nothing with `quiet=True`: the caller has the outcome in the return value."""
    if not options.get("quiet"):
        yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


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
