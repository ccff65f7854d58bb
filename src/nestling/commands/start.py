"""`nestling run | cv | tune`: parse, check, plan, write the tree, launch, collect, report.

Everything that can be wrong with the input is found by `preflight.prepare` and `launch.factory.make_launcher`
before the first directory is created. `--resume NAME` continues a plan from its tree (see resume.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.commands.detach import detach
from nestling.commands.resume import prepare_resume
from nestling.core.errors import UsageError
from nestling.core.host.devices import parse_devices
from nestling.core.lazy import lazy_module
from nestling.core.options.config import PARALLEL_STRATEGIES, Config, parse_config
from nestling.core.tree import failfast
from nestling.core.tree.launch_record import LaunchRecord, append_launch
from nestling.launch.base import Launcher, SubmitError, plural
from nestling.launch.factory import described_task, make_launcher, prestart_local
from nestling.plan.model import WorkUnit
from nestling.plan.preflight import check_job_resources, prepare
from nestling.plan.store import write_plan
from nestling.plan.units import auto_runs_per_task, run_dirs_per_cv, work_units
from nestling.read.progress import RunProgress
from nestling.read.report.build import write_report

if TYPE_CHECKING:
    from nestling.read import collect, summary
    from nestling.read.collect import Collected
else:
    collect = lazy_module("nestling.read.collect")
    summary = lazy_module("nestling.read.summary")

DESCRIPTIONS = {
    "run": "Train one run.",
    "cv": "Cross-validate one hyperparameter set.",
    "tune": "Tune hyperparameters: one cross-validation per sampled set.",
}


def parallel_strategy(config: Config) -> str:
    return config.device.strategy if config.device.strategy in PARALLEL_STRATEGIES else "serial"


@dataclass(frozen=True)
class Executed:
    """How `execute` ended: its exit code and the plan it made or resumed (None for a dry run)."""

    exit_code: int
    kind: str
    name: str | None = None
    root: Path | None = None


# what runs after a plan ended or was submitted: (kind, root, config, whether it ended, exit code) -> exit code
Then = Callable[[str, Path, Config, bool, int], int]


def execute_plan(kind: str, argv: list[str], then: Then | None = None) -> int:
    return execute(kind, argv, then).exit_code


def execute(kind: str, argv: list[str], then: Then | None = None) -> Executed:
    """Parse, check, plan (or resume), write the tree and launch, then `then` (cli passes `nestling tune
    --retrain`; with --detach the supervisor runs it, after the sweep): the command line's `run`, `cv`, `tune`,
    and the Python API's (commands/api.py), which reads the plan's tables from `root` afterwards."""

    config = parse_config(argv, prog=f"nestling {kind}", description=DESCRIPTIONS[kind])
    check_detach(config)
    if config.launch.resume:
        resumed = prepare_resume(kind, config, argv)
        config = resumed.config
        if not resumed.total:
            print(f"{kind} {resumed.name}: every run succeeded already; nothing to resume")
            code = _finish(resumed.root, config.logging.quiet)
            code = then(kind, resumed.root, config, True, code) if then else code  # it ended
            return Executed(code, kind, resumed.name, resumed.root)

        check_job_resources(config)  # the launch options may have changed since planning
        launcher = make_launcher(config, kind, resumed.name, parse_devices(config.device.devices))
        units = work_units(
            resumed.run_dirs, parallel_strategy(config), runs_per_task(config, resumed.total, launcher)
        )
        if config.launch.detach:
            code = detach(kind, resumed.name, resumed.root, units, config, resumed.total, resumed.record, then)
        else:
            code = launch_and_report(
                kind, resumed.name, resumed.root, units, launcher, config, resumed.total, resumed.record
            )
            code = then(kind, resumed.root, config, _ended(launcher, config), code) if then else code
        return Executed(code, kind, resumed.name, resumed.root)
    # the local pool starts now: its first worker describes the task while the workers import torch meanwhile
    # (a detached sweep's supervisor starts its own pool)
    pool = None if config.launch.detach else prestart_local(config, kind)
    try:
        prepared = prepare(config, kind, described=lambda: described_task(pool, config.data.task))
        plan = prepared.plan
        launcher = make_launcher(config, kind, plan.name, prepared.devices, task=prepared.task, prestarted=pool)
        units = work_units(
            run_dirs_per_cv(plan), parallel_strategy(config), runs_per_task(config, len(plan.runs), launcher)
        )
        if config.launch.dry_run:  # the scripts and a summary; no artifact tree, nothing submitted
            print(launcher.describe(plan.root, units, f"{kind} {plan.name}"))
            for line in describe_trials(plan, config):
                print(line)
            if pool is not None:
                pool.discard()
            return Executed(0, kind)
        try:
            write_plan(plan, prepared.splits)
        except FileExistsError:  # another process took the name between the check and now
            raise UsageError(
                f"{kind} {plan.name!r} already exists in {config.logging.artifact_dir}; choose another --name"
            ) from None
    except BaseException:  # a planning error: the prestarted workers have run nothing; stop them
        if pool is not None:
            pool.discard()
        raise
    if config.launch.detach:
        code = detach(kind, plan.name, plan.root, units, config, len(plan.runs), then=then)
    else:
        code = launch_and_report(kind, plan.name, plan.root, units, launcher, config, total=len(plan.runs))
        code = then(kind, plan.root, config, _ended(launcher, config), code) if then else code
    return Executed(code, kind, plan.name, plan.root)


def _ended(launcher: Launcher, config: Config) -> bool:
    """Whether the plan's work has ended when launch_and_report returns (not a detached launch left running)."""
    return not launcher.detached or config.launch.wait


def describe_trials(plan: Any, config: Config) -> list[str]:
    """For a dry run: the hyperparameter sets the plan would train and each one's run count, so a sweep can be
    checked before it spends a cluster. random and grid draw every trial when the plan is made (seeded), so these
    are exactly the trials a launch trains; an adaptive sampler draws at start. A cv or run prints only the
    launcher's description."""
    if plan.kind != "tune":
        return []
    if plan.adaptive:  # nothing is drawn before a worker starts a trial (study.py)
        tune = config.tune
        return [
            f"configurations: {len(plan.cvs)} trials, each drawn at start by --sampler {tune.sampler} from the "
            f"results finished by then (pruner: {tune.pruner}); {plural(len(plan.cvs[0].runs), 'run')} per trial"
        ]
    keys = sorted({k for cv in plan.cvs for k in cv.hparams})
    varying = [k for k in keys if len({repr(cv.hparams.get(k)) for cv in plan.cvs}) > 1] or keys
    fixed = [k for k in keys if k not in varying]
    lines = [
        f"{len(plan.cvs)} trials drawn by the {config.tune.sampler} sampler (seed {config.tune.tune_seed}):"
    ]
    width = max(len(str(cv.cv_name)) for cv in plan.cvs)
    for cv in plan.cvs:
        lines.append(f"  {str(cv.cv_name):<{width}}  {_hp_text(cv.hparams, varying)}  {plural(len(cv.runs), 'run')}")
    if fixed:
        lines.append(f"same in every trial: {_hp_text(plan.cvs[0].hparams, fixed)}")
    return lines


def _hp_text(hparams: dict[str, Any], keys: list[str]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, float):  # 0.01 and 1.0 as written, a drawn 0.012523918 as 0.01252
            return repr(v) if len(repr(v)) <= 8 else f"{v:.4g}"
        return repr(v) if isinstance(v, str) else str(v)

    return " ".join(f"{k}={value(hparams.get(k))}" for k in keys) or "(task defaults)"


def check_detach(config: Config) -> None:
    """--detach is for the local launcher; SLURM and submitit launches return at once already."""
    if config.launch.detach and config.launch.launcher != "local":
        raise UsageError(
            f"--detach is for --launcher local; --launcher {config.launch.launcher} returns once the jobs are "
            "submitted already (drop --detach)"
        )


def runs_per_task(config: Config, n_runs: int, launcher: Launcher) -> int:
    """--runs_per_task, or chosen from --expected_run_s and the number of parallel slots."""
    if config.launch.expected_run_s is None:
        return config.launch.runs_per_task

    return auto_runs_per_task(config.launch.expected_run_s, n_runs, launcher.parallel_slots)


def launch_and_report(
    kind: str,
    name: str,
    root: Path,
    units: list[WorkUnit],
    launcher: Launcher,
    config: Config,
    total: int,
    extra_record: dict[str, Any] | None = None,
) -> int:
    quiet = config.logging.quiet
    failfast.arm(root, config.launch.fail_fast)  # a fresh ledger: a resume starts counting again
    if not quiet:
        print(f"{kind} {name}: {plural(total, 'run')} in {plural(len(units), 'work unit')} -> {root}")
    with RunProgress(total, f"{kind} {name}", quiet=quiet) as progress:
        try:
            record = launcher.launch(root, units, progress)
        except SubmitError as exc:
            if exc.record is None:
                raise
            save_launch(root, exc.record.updated({**(extra_record or {}), "finished_at": time.time()}))
            print(
                f"nestling: submission failed: {exc}; nothing runs; fix it and resume with --resume {name}",
                file=sys.stderr,
            )
            return 1
        save_launch(root, record.updated(extra_record or {}))
        if record.interrupted:
            return _interrupted(kind, name, root, config)
        if record.submit_error:
            print(
                f"nestling: some arrays were not submitted ({record.submit_error}); their runs show as lost; "
                f"after the submitted ones end, resume with --resume {name}",
                file=sys.stderr,
            )
        if launcher.detached:
            if not config.launch.wait:
                _print_follow_up(root, record)
                return 0
            launcher.wait(record, progress)
    return _finish(root, quiet)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def _interrupted(kind: str, name: str, root: Path, config: Config) -> int:
    """Ctrl-C stopped the launch: say what is kept and the one command that continues it."""

    counts = collect.collect(root).counts
    total = counts["success"] + counts["failed"] + counts["missing"]
    where = "" if config.logging.artifact_dir == Config().logging.artifact_dir else (
        f" --artifact_dir {config.logging.artifact_dir}"
    )
    print(
        f"nestling: interrupted: {counts['success']} of {total} runs finished, "
        f"{counts['missing']} interrupted or not started (kept in {root});\n"
        f"resume with: nestling {kind} --resume {name}{where}",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED


def save_launch(root: Path, record: LaunchRecord) -> None:
    """launch.json keeps every launch of a plan (each resume appends one)."""
    append_launch(root, record, now=time.time())


def _print_follow_up(root: Path, record: LaunchRecord) -> None:
    jobs = ", ".join(record.job_ids or [])
    print(f"submitted: jobs {jobs}; collector job {record.collector_job_id}")
    print(f"follow:    nestling status {root} --watch")
    print(f"results:   nestling collect {root}   (the collector job runs it when the jobs end)")
    if record.extra.get("retrain_job_id"):
        print(f"retrain:   job {record.extra['retrain_job_id']} runs nestling retrain {root} after the collector")


def _finish(root: Path, quiet: bool) -> int:
    collected = collect.collect(root)
    if not quiet:
        summary.print_summary(collected)
    if collected.plan.kind in ("cv", "tune"):
        _write_report(root, collected, quiet)
    stop = failfast.stopped(root)
    if stop is not None:
        print(f"nestling: {stop.message(collected.plan.name, error_shown=not quiet)}", file=sys.stderr)
    # --quiet silences progress and tables, never the outcome; without it the summary already listed the errors
    print(outcome_line(collected, errors_shown=not quiet), file=sys.stderr)
    if stop is not None:
        return 1
    return 0 if collected.counts["success"] > 0 else 1


def _write_report(root: Path, collected: Collected, quiet: bool) -> None:
    """report.html beside the tables. A report that cannot be written costs a warning, never the finished plan."""
    try:
        path = write_report(root, collected)
    except Exception as exc:  # a plotting bug or a full disk must not turn a finished tune into a failure
        print(f"nestling: report not written ({type(exc).__name__}: {exc}); retry with nestling report {root}",
              file=sys.stderr)  # fmt: skip
        return
    if not quiet:
        print(f"report: {path}")


def outcome_line(collected: Collected, errors_shown: bool = False) -> str:
    """One line that says how the plan ended, e.g. `cv X: 0 of 6 runs succeeded; first error: ...; see ...`.

    `errors_shown`: the summary above already listed every distinct error, so the line does not repeat one."""

    counts = collected.counts
    plan = collected.plan
    total = counts["success"] + counts["failed"] + counts["missing"]
    parts = [f"{plan.kind} {plan.name}: {counts['success']} of {total} runs succeeded"]
    laddered = [cv for cv in collected.cvs if cv.rung is not None]  # --pruner asha|hyperband
    if laddered:
        stopped = sum(cv.state == "pruned" for cv in laddered)
        epochs = sum(cv.n_epochs_done for cv in collected.cvs)
        parts.append(f"{stopped} of {len(laddered)} trials pruned at a rung, {epochs} epochs trained")
    groups = summary.error_groups(collected)
    if groups and not errors_shown:
        first = next(e for cv in collected.cvs for e in cv.table.get_column("error").to_list() if e)
        parts.append(f"first error: {summary.error_line(first)}")
    elif groups:
        parts.append(f"{len(groups)} distinct error{'' if len(groups) == 1 else 's'} above")
    if counts["success"] < total:  # a single run: its own dir, not the _runs folder of every run
        parts.append(f"see nestling status {summary.status_target(collected)}")
    return "; ".join(parts)
