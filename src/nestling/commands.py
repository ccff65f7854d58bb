"""`nestling run | cv | tune`: parse, check, plan, write the tree, launch, collect, report.

Everything that can be wrong with the input is found by `preflight.prepare` and `launch.factory.make_launcher`
before the first directory is created. `--resume NAME` continues a plan from its tree (see resume.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from nestling import naming
from nestling.config import PARALLEL_STRATEGIES, Config, parse_config
from nestling.errors import UsageError
from nestling.launch.base import Launcher
from nestling.plan import WorkUnit
from nestling.records import read_json, write_json

DESCRIPTIONS = {
    "run": "Train one run.",
    "cv": "Cross-validate one hyperparameter set.",
    "tune": "Tune hyperparameters: one cross-validation per sampled set.",
}


def parallel_strategy(config: Config) -> str:
    return config.device.strategy if config.device.strategy in PARALLEL_STRATEGIES else "serial"


def execute_plan(kind: str, argv: list[str]) -> int:
    from nestling.artifacts import write_plan
    from nestling.launch.factory import make_launcher
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
        launcher = make_launcher(config, kind, resumed.name, parse_devices(config.device.devices))
        units = work_units(
            resumed.run_dirs, parallel_strategy(config), runs_per_task(config, resumed.total, launcher)
        )
        return launch_and_report(
            kind, resumed.name, resumed.root, units, launcher, config, resumed.total, resumed.record
        )
    prepared = prepare(config, kind)
    plan = prepared.plan
    launcher = make_launcher(config, kind, plan.name, prepared.devices)
    units = work_units(
        run_dirs_per_cv(plan), parallel_strategy(config), runs_per_task(config, len(plan.runs), launcher)
    )
    if config.launch.dry_run:
        return _dry_run(kind, plan, units, launcher)
    try:
        write_plan(plan, prepared.splits)
    except FileExistsError:  # another process took the name between the check and now
        raise UsageError(
            f"{kind} {plan.name!r} already exists in {config.logging.artifact_dir}; choose another --name"
        ) from None
    return launch_and_report(kind, plan.name, plan.root, units, launcher, config, total=len(plan.runs))


def runs_per_task(config: Config, n_runs: int, launcher: Launcher) -> int:
    """--runs_per_task, or chosen from --expected_run_s and the number of parallel slots."""
    if config.launch.expected_run_s is None:
        return config.launch.runs_per_task
    from nestling.plan import auto_runs_per_task

    slots = getattr(launcher, "slots", None)
    parallel = len(slots) if slots else config.launch.array_parallelism
    return auto_runs_per_task(config.launch.expected_run_s, n_runs, parallel)


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
    from nestling.progress import RunProgress

    quiet = config.logging.quiet
    if not quiet:
        print(f"{kind} {name}: {total} runs in {len(units)} work units -> {root}")
    with RunProgress(total, f"{kind} {name}", quiet=quiet) as progress:
        try:
            record = launcher.launch(root, units, progress)
        except Exception as exc:
            record = getattr(exc, "record", None)
            if record is None:
                raise
            save_launch(root, {**record, **(extra_record or {}), "finished_at": time.time()})
            print(
                f"nestling: submission failed: {exc}; nothing runs; fix it and resume with --resume {name}",
                file=sys.stderr,
            )
            return 1
        save_launch(root, {**record, **(extra_record or {})})
        if record.get("submit_error"):
            print(
                f"nestling: some arrays were not submitted ({record['submit_error']}); their runs show as lost; "
                f"after the submitted ones end, resume with --resume {name}",
                file=sys.stderr,
            )
        if launcher.detached:
            if not config.launch.wait:
                _print_follow_up(root, record)
                return 0
            launcher.wait(record, progress)
    return _finish(root, quiet)


def _dry_run(kind: str, plan: Any, units: list[WorkUnit], launcher: Any) -> int:
    """Write and print the job scripts and a summary; create no artifact tree, submit nothing."""
    if not hasattr(launcher, "resources"):
        print(
            f"dry run: {kind} {plan.name}: {len(plan.runs)} runs in {len(units)} work units on the local launcher"
        )
        return 0
    record = launcher.launch(plan.root, units, progress=None)
    res = launcher.resources
    limit = record["max_array_size"]
    for path in record["scripts"]:
        print(f"# ---- {path}")
        print(Path(path).read_text())
    if launcher.container is not None and units:
        import shlex

        from nestling.launch.entry import slurm_task_command

        example = slurm_task_command(
            ["--serve"], launcher.container, {"SLURM_JOB_GPUS": "0"}, interactive=True
        )
        print("# each task feeds its units to one worker in the image, e.g. task 0 (given GPU 0):")
        print("# " + shlex.join(example))
    arrays = -(-len(units) // limit) if units else 0
    print(
        f"dry run: {kind} {plan.name}: {len(plan.runs)} runs in {len(units)} array tasks, {arrays} array(s) of at most "
        f"{limit} (MaxArraySize) + 1 collector job; per task: {res.nodes} node(s) x {res.tasks_per_node} task(s), "
        f"{res.cpus_per_task} cpus, {res.mem_gb} GB, {res.gpus_per_task} GPU(s), {res.time_min} min, partition "
        f"{res.partition or '(default)'}; nothing was submitted"
    )
    return 0


def save_launch(root: Path, record: dict[str, Any]) -> None:
    """launch.json keeps every launch of a plan (each resume appends one)."""
    path = root / naming.LAUNCH
    history: list[dict[str, Any]] = read_json(path).get("launches", []) if path.exists() else []
    write_json(path, {"launches": [*history, {**record, "saved_at": time.time()}]}, compact=True)


def _print_follow_up(root: Path, record: dict[str, Any]) -> None:
    jobs = ", ".join(str(j) for j in record.get("job_ids", []))
    print(f"submitted: jobs {jobs}; collector job {record.get('collector_job_id')}")
    print(f"follow:    nestling status {root} --watch")
    print(f"results:   nestling collect {root}   (the collector job runs it when the jobs end)")


def _finish(root: Path, quiet: bool) -> int:
    from nestling.collect import collect
    from nestling.report import print_summary

    collected = collect(root)
    if not quiet:
        print_summary(collected)
    return 0 if collected.counts["success"] > 0 else 1
