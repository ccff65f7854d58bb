"""`nestling run | cv | tune`: parse, check, plan, write the tree, launch, collect, report.

Everything that can be wrong with the input is found by `preflight.prepare` and `launch.factory.make_launcher`
before the first directory is created. `--resume NAME` continues a plan from its tree (see resume.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.config import PARALLEL_STRATEGIES, Config, parse_config
from nestling.errors import UsageError
from nestling.launch.base import Launcher, SubmitError
from nestling.plan import WorkUnit
from nestling.records import LaunchRecord, append_launch

if TYPE_CHECKING:
    from nestling.collect import Collected

DESCRIPTIONS = {
    "run": "Train one run.",
    "cv": "Cross-validate one hyperparameter set.",
    "tune": "Tune hyperparameters: one cross-validation per sampled set.",
}


def parallel_strategy(config: Config) -> str:
    return config.device.strategy if config.device.strategy in PARALLEL_STRATEGIES else "serial"


def execute_plan(kind: str, argv: list[str]) -> int:
    from nestling.artifacts import write_plan
    from nestling.launch.factory import described_task, make_launcher, prestart_local
    from nestling.plan import run_dirs_per_cv, work_units
    from nestling.preflight import prepare

    config = parse_config(argv, prog=f"nestling {kind}", description=DESCRIPTIONS[kind])
    if config.launch.resume:
        from nestling.devices import parse_devices
        from nestling.resume import prepare_resume

        resumed = prepare_resume(kind, config, argv)
        config = resumed.config
        if not resumed.total:
            print(f"{kind} {resumed.name}: every run succeeded already; nothing to resume")
            return _finish(resumed.root, config.logging.quiet)
        from nestling.preflight import check_job_resources

        check_job_resources(config)  # the launch options may have changed since planning
        launcher = make_launcher(config, kind, resumed.name, parse_devices(config.device.devices))
        units = work_units(
            resumed.run_dirs, parallel_strategy(config), runs_per_task(config, resumed.total, launcher)
        )
        return launch_and_report(
            kind, resumed.name, resumed.root, units, launcher, config, resumed.total, resumed.record
        )
    pool = prestart_local(config, kind)  # its workers import torch while this process loads the task and plans
    try:
        prepared = prepare(config, kind, described=lambda: described_task(pool, config.data.task))
        plan = prepared.plan
        launcher = make_launcher(config, kind, plan.name, prepared.devices, task=prepared.task, prestarted=pool)
        units = work_units(
            run_dirs_per_cv(plan), parallel_strategy(config), runs_per_task(config, len(plan.runs), launcher)
        )
        if config.launch.dry_run:  # the scripts and a summary; no artifact tree, nothing submitted
            print(launcher.describe(plan.root, units, f"{kind} {plan.name}"))
            return 0
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
    return launch_and_report(kind, plan.name, plan.root, units, launcher, config, total=len(plan.runs))


def runs_per_task(config: Config, n_runs: int, launcher: Launcher) -> int:
    """--runs_per_task, or chosen from --expected_run_s and the number of parallel slots."""
    if config.launch.expected_run_s is None:
        return config.launch.runs_per_task
    from nestling.plan import auto_runs_per_task

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
    from nestling import failfast
    from nestling.progress import RunProgress

    quiet = config.logging.quiet
    failfast.arm(root, config.launch.fail_fast)  # a fresh ledger: a resume starts counting again
    if not quiet:
        print(f"{kind} {name}: {total} runs in {len(units)} work units -> {root}")
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


def save_launch(root: Path, record: LaunchRecord) -> None:
    """launch.json keeps every launch of a plan (each resume appends one)."""
    append_launch(root, record, now=time.time())


def _print_follow_up(root: Path, record: LaunchRecord) -> None:
    jobs = ", ".join(record.job_ids or [])
    print(f"submitted: jobs {jobs}; collector job {record.collector_job_id}")
    print(f"follow:    nestling status {root} --watch")
    print(f"results:   nestling collect {root}   (the collector job runs it when the jobs end)")


def _finish(root: Path, quiet: bool) -> int:
    from nestling import failfast
    from nestling.collect import collect
    from nestling.report import print_summary

    collected = collect(root)
    if not quiet:
        print_summary(collected)
    print(outcome_line(collected), file=sys.stderr)  # --quiet silences progress and tables, never the outcome
    stop = failfast.stopped(root)
    if stop is not None:
        print(f"nestling: {stop.message(collected.plan.name)}", file=sys.stderr)
        return 1
    return 0 if collected.counts["success"] > 0 else 1


def outcome_line(collected: Collected) -> str:
    """One line that says how the plan ended, e.g. `cv X: 0 of 6 runs succeeded; first error: ...; see ...`."""
    counts = collected.counts
    plan = collected.plan
    total = counts["success"] + counts["failed"] + counts["missing"]
    parts = [f"{plan.kind} {plan.name}: {counts['success']} of {total} runs succeeded"]
    errors = (e for cv in collected.cvs for e in cv.table.get_column("error").to_list() if e)
    first = next(errors, None)
    if first is not None:
        line = str(first).strip().splitlines()[0] if str(first).strip() else str(first)
        parts.append(f"first error: {line[:300]}")
    if counts["success"] < total:  # a single run: its own dir, not the _runs folder of every run
        where = plan.cvs[0].runs[0].dir if plan.kind == "run" and plan.cvs and plan.cvs[0].runs else plan.root
        parts.append(f"see nestling status {where}")
    return "; ".join(parts)
