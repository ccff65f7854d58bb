"""`nestling run | cv | tune`: parse, check, plan, write the tree, launch, collect, report.

Everything that can be wrong with the input is found by `preflight.prepare` and `launchers.make_launcher` before
the first directory is created.
"""

from __future__ import annotations

import time
from typing import Any

from nestling import naming
from nestling.config import PARALLEL_STRATEGIES, Config, parse_config
from nestling.records import write_json

DESCRIPTIONS = {
    "run": "Train one run.",
    "cv": "Cross-validate one hyperparameter set.",
    "tune": "Tune hyperparameters: one cross-validation per sampled set.",
}


def execute_plan(kind: str, argv: list[str]) -> int:
    from nestling.artifacts import write_plan
    from nestling.launch.factory import make_launcher
    from nestling.plan import work_units
    from nestling.preflight import prepare
    from nestling.progress import RunProgress

    config = parse_config(argv, prog=f"nestling {kind}", description=DESCRIPTIONS[kind])
    prepared = prepare(config, kind)
    plan = prepared.plan
    launcher = make_launcher(config, prepared)
    strategy = config.device.strategy if config.device.strategy in PARALLEL_STRATEGIES else "serial"
    units = work_units(plan, strategy, config.launch.runs_per_task)
    quiet = config.logging.quiet
    if config.launch.dry_run:
        return _dry_run(kind, plan, units, launcher)
    write_plan(plan, prepared.splits)
    if not quiet:
        print(f"{kind} {plan.name}: {len(plan.runs)} runs in {len(units)} work units -> {plan.root}")
    with RunProgress(len(plan.runs), f"{kind} {plan.name}", quiet=quiet) as progress:
        record = launcher.launch(plan.root, units, progress)
        _save_launch(plan.root, record)
        if launcher.detached:
            if not config.launch.wait:
                _print_follow_up(plan.root, record, quiet)
                return 0
            launcher.wait(record, progress)
    return _finish(plan.root, quiet)


def _dry_run(kind: str, plan: Any, units: list[Any], launcher: Any) -> int:
    """Write and print the job scripts and a summary; create no artifact tree, submit nothing."""
    if not hasattr(launcher, "resources"):
        print(f"dry run: {kind} {plan.name}: {len(plan.runs)} runs in {len(units)} work units on the local launcher")
        return 0
    record = launcher.launch(plan.root, units, progress=None)
    res = launcher.resources
    limit = record["max_array_size"]
    for path in record["scripts"]:
        print(f"# ---- {path}")
        print(open(path).read())
    arrays = -(-len(units) // limit) if units else 0
    print(
        f"dry run: {kind} {plan.name}: {len(plan.runs)} runs in {len(units)} array tasks, {arrays} array(s) of at most "
        f"{limit} (MaxArraySize) + 1 collector job; per task: {res.nodes} node(s) x {res.tasks_per_node} task(s), "
        f"{res.cpus_per_task} cpus, {res.mem_gb} GB, {res.gpus_per_task} GPU(s), {res.time_min} min, partition "
        f"{res.partition or '(default)'}; nothing was submitted"
    )
    return 0


def _save_launch(root: Any, record: dict[str, Any]) -> None:
    """launch.json keeps every launch of a plan (resume appends one)."""
    path = root / naming.LAUNCH
    history: list[dict[str, Any]] = []
    if path.exists():
        from nestling.records import read_json

        history = read_json(path).get("launches", [])
    record = {**record, "saved_at": time.time()}
    write_json(path, {"launches": [*history, record]})


def _print_follow_up(root: Any, record: dict[str, Any], quiet: bool) -> None:
    jobs = ", ".join(str(j) for j in record.get("job_ids", []))
    print(f"submitted: jobs {jobs}; collector job {record.get('collector_job_id')}")
    print(f"follow:    nestling status {root} --watch")
    print(f"results:   nestling collect {root}   (the collector job runs it when the jobs end)")


def _finish(root: Any, quiet: bool) -> int:
    from nestling.collect import collect
    from nestling.report import print_summary

    collected = collect(root)
    if not quiet:
        print_summary(collected)
    counts = collected.counts
    return 0 if counts["success"] > 0 else 1


def describe(config: Config) -> str:  # pragma: no cover - used by --dry_run summaries later
    return f"{config.launch.launcher} launcher"
