"""`--resume NAME`: continue a tune or cv from its artifact tree, never redoing finished work.

The saved plan is re-read (trials are never re-sampled); runs whose result is success are skipped; failed, missing
and lost runs run again with the same run_name and run_id and the next attempt number (a failed result is kept as
run_result.attempt-N.json). Options that define the plan must not change: a changed option is refused with a diff
unless --force, which applies changed training/device options to the reruns. Launch and container options may
change freely (e.g. resume a local sweep on SLURM).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from nestling import naming
from nestling.artifacts import PlanOnDisk, load_plan
from nestling.config import Config, config_from_dict
from nestling.errors import UsageError
from nestling.records import read_result, write_atomic

PLAN_GROUPS = ("data", "training", "cv", "tune", "device")  # what the saved plan was made from
APPLIED_ON_FORCE = {
    "training": ("max_epochs", "early_stopping_patience"),
    "device": ("accelerator", "strategy", "devices", "num_nodes"),
}
IGNORED = {("logging", "name"), ("launch", "resume"), ("launch", "force")}


def resume(kind: str, config: Config, argv: list[str]) -> int:
    from nestling.commands import launch_and_report, parallel_strategy, runs_per_task
    from nestling.devices import parse_devices
    from nestling.launch.factory import make_launcher
    from nestling.plan import work_units

    name = naming.validate_name(config.launch.resume or "", "--resume name")
    if kind == "run":
        raise UsageError(
            "--resume is for nestling cv and nestling tune; a single run is resumed by its cv or tune"
        )
    root = naming.top_dir(Path(config.logging.artifact_dir), kind, name)
    if not (root / naming.PLAN).is_file():
        raise UsageError(
            f"no {kind} named {name!r} in {config.logging.artifact_dir} (no {root / naming.PLAN}); check --artifact_dir"
        )
    plan = load_plan(root)
    saved = config_from_dict(plan.options)
    changes = changed_options(saved, config)
    if changes and not config.launch.force:
        raise UsageError(
            f"{kind} {name!r} was planned with other options: {'; '.join(changes)}; drop them to resume as planned, "
            "or add --force"
        )
    effective = _effective(saved, config)
    _refuse_if_active(plan)
    todo = [run for run in plan.runs if (read_result(run.dir) or {}).get("status") != "success"]
    if not todo:
        print(f"{kind} {name}: every run succeeded already; nothing to resume")
        from nestling.commands import _finish

        return _finish(root, effective.logging.quiet)
    for run in todo:
        _archive_failed_result(run.dir)
        _remove_stale_lock(run.dir)
        if config.launch.force and changes:
            _apply_forced(run.dir, effective)
    wanted = {str(r.dir) for r in todo}
    per_cv = [[str(r.dir) for r in cv.runs if str(r.dir) in wanted] for cv in plan.cvs]
    devices = parse_devices(effective.device.devices)
    launcher = make_launcher(effective, kind, name, devices)
    units = work_units(per_cv, parallel_strategy(effective), runs_per_task(effective, len(todo), launcher))
    return launch_and_report(
        kind, name, root, units, launcher, effective, total=len(todo),
        extra_record={"resume": True, "rerun": len(todo), "forced_changes": changes if config.launch.force else []},
    )  # fmt: skip


def changed_options(saved: Config, current: Config) -> list[str]:
    """Options set in this invocation (differing from defaults) whose value differs from the saved plan's."""
    defaults = Config().to_dict()
    now, before = current.to_dict(), saved.to_dict()
    changes = []
    for group in PLAN_GROUPS:
        for key, value in now[group].items():
            if (group, key) in IGNORED or value == defaults[group][key]:
                continue
            if value != before[group].get(key):
                changes.append(f"--{key} {before[group].get(key)!r} -> {value!r}")
    for key, value in now["hparams"].items():
        if before["hparams"].get(key) != value:
            changes.append(f"--hp {key} {before['hparams'].get(key)!r} -> {value!r}")
    return changes


def _effective(saved: Config, current: Config) -> Config:
    """The saved plan's options, with this invocation's launch/container options (and forced changes)."""
    device, training = saved.device, saved.training
    if current.launch.force:
        defaults = Config()
        device = dataclasses.replace(
            device, **{k: getattr(current.device, k) for k in APPLIED_ON_FORCE["device"]
                       if getattr(current.device, k) != getattr(defaults.device, k)},
        )  # fmt: skip
        training = dataclasses.replace(
            training, **{k: getattr(current.training, k) for k in APPLIED_ON_FORCE["training"]
                         if getattr(current.training, k) != getattr(defaults.training, k)},
        )  # fmt: skip
    logging = dataclasses.replace(saved.logging, quiet=current.logging.quiet)
    return dataclasses.replace(
        saved,
        device=device,
        training=training,
        logging=logging,
        launch=current.launch,
        container=current.container,
    )


def _refuse_if_active(plan: PlanOnDisk) -> None:
    """A run dir is never shared by two live attempts: refuse while any run of the plan is running or queued."""
    from nestling.status import run_states

    # Without launch.json (a local driver killed mid-sweep) every unfinished run reads "pending", so only a live
    # attempt lock ("running") counts; with one, queued SLURM tasks count too.
    launches_exist = (plan.root / naming.LAUNCH).exists()
    active = [
        s for s in run_states(plan)
        if s.state == "running" or (s.state in ("pending", "blocked") and launches_exist)
    ]
    if active:
        jobs = sorted({s.job.split("_")[0] for s in active if s.job})
        where = f" (jobs {', '.join(jobs)})" if jobs else ""
        raise UsageError(
            f"{len(active)} runs of {plan.name!r} are still running or queued{where}; wait for them "
            f"(nestling status {plan.root} --watch) or cancel them, then resume"
        )


def _remove_stale_lock(run_dir: Path) -> None:
    """A lock left by a killed attempt: checked dead here (this host can see its pid), so a rerun on another
    machine, which could not check it, does not wait for it."""
    from nestling.status import lock_alive

    lock = naming.RunPaths(run_dir).lock
    if lock.exists() and not lock_alive(run_dir):
        lock.unlink(missing_ok=True)


def _archive_failed_result(run_dir: Path) -> None:
    result = read_result(run_dir)
    if result is None:
        return
    paths = naming.RunPaths(run_dir)
    attempt = result.get("attempt") or 1
    paths.result.rename(paths.dir / f"run_result.attempt-{attempt}.json")


def _apply_forced(run_dir: Path, effective: Config) -> None:
    from nestling.artifacts import load_spec

    spec = load_spec(run_dir).to_dict()  # a run that never started gets its run_spec.json here
    spec.update(
        max_epochs=effective.training.max_epochs,
        early_stopping_patience=effective.training.early_stopping_patience,
        accelerator=effective.device.accelerator,
    )
    write_atomic(naming.RunPaths(run_dir).spec, json.dumps(spec))
