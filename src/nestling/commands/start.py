"""`nestling run | cv | tune` and `nestling.run | cv | tune`, their options parsed: check, plan, write the tree,
launch, collect, report.

Everything that can be wrong with the input is found by `preflight.prepare` and `launch.factory.make_launcher`
before the first directory is created. `--resume NAME` continues a plan from its tree (see resume.py).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.commands.code_capture import preload_dir, print_drift, release_code, take_code
from nestling.commands.detach import detach
from nestling.commands.resume import prepare_resume
from nestling.core.errors import EXIT_INTERRUPTED, StorageFull, UsageError
from nestling.core.host import storage
from nestling.core.host.devices import parse_devices
from nestling.core.lazy import lazy_module
from nestling.core.ml.task import Split
from nestling.core.options.config import PARALLEL_STRATEGIES, Config
from nestling.core.provenance.capture import describe_code, plan_provenance
from nestling.core.provenance.record import TakenCode
from nestling.core.tree import failfast, fault_ledger, naming
from nestling.core.tree.failure_class import is_storage_error
from nestling.core.tree.launch_record import LaunchRecord, append_launch
from nestling.core.tree.run_state import RunState
from nestling.execute.search.trials import TrialState
from nestling.launch.base import Launcher, SubmitError, plural
from nestling.launch.factory import described_task, make_launcher, prestart_local
from nestling.plan.capacity import check_room
from nestling.plan.model import LaunchRequest
from nestling.plan.preflight import check_job_resources, prepare
from nestling.plan.store import load_plan, write_plan
from nestling.plan.units import auto_runs_per_task, run_dirs_per_cv, work_units
from nestling.read.progress import RunProgress
from nestling.read.report.compose import write_report

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
    """How a plan command ended: its exit code and the plan it made or resumed (None for a dry run)."""

    exit_code: int
    kind: str
    name: str | None = None
    root: Path | None = None


# what runs after a plan ended or was submitted: (kind, root, config, whether it ended, exit code) -> exit code
Then = Callable[[str, Path, Config, bool, int], int]


def start_plan(
    kind: str, config: Config, explicit: AbstractSet[str] = frozenset(), then: Then | None = None
) -> Executed:
    """`nestling run | cv | tune` once its options are parsed, and `nestling.run | cv | tune`: check, plan (or
    resume), write the tree and launch, then `then` (`tune --retrain`; with --detach the supervisor runs it, after
    the sweep). `explicit`: the options the user gave (a resume compares them with the plan even at their default)."""

    check_detach(config)
    if config.launch.resume:
        return resume_plan(kind, config, explicit, then)
    # the task's code is snapshotted first: every worker imports the task from the snapshot, the pool's too
    code = None if config.launch.dry_run else take_code(config)
    try:
        return _start_new(kind, config, code, then)
    finally:  # the plan has its own copy now, and the pool that imported this one has ended
        release_code(code)


def _start_new(kind: str, config: Config, code: TakenCode | None, then: Then | None) -> Executed:
    """Plan, write and launch a new plan whose code was taken (`code`)."""
    # the local pool starts now: its first worker describes the task while the workers import torch meanwhile
    # (a detached sweep's supervisor starts its own pool)
    pool = None if config.launch.detach else prestart_local(config, kind, code=preload_dir(code))
    try:
        prepared = prepare(config, kind, described=lambda: described_task(pool, config.data.task))
        provenance = plan_provenance(code, prepared.task, config.data.task)
        plan = dataclasses.replace(prepared.plan, provenance=provenance)
        launcher = make_launcher(config, kind, plan.name, prepared.devices, task=prepared.task, prestarted=pool)
        units = work_units(
            run_dirs_per_cv(plan), parallel_strategy(config), runs_per_task(config, len(plan.runs), launcher)
        )
        room = check_room(plan, config, len(plan.runs), len(units), launcher.parallel_slots)
        if config.launch.dry_run:  # the scripts and a summary; no artifact tree, nothing submitted
            print(launcher.describe(plan.root, units, f"{kind} {plan.name}"))
            print(f"storage: {room.describe()}", file=sys.stderr)  # (on stderr: block sizes differ between hosts)
            for line in [*describe_trials(plan, config), *describe_retrain(plan, prepared.splits, config)]:
                print(line)
            code_line = describe_code(config.data.task, enabled=config.launch.snapshot_code,
                                      max_mb=config.launch.snapshot_max_mb)  # fmt: skip
            if code_line:
                print(code_line)
            if pool is not None:
                pool.discard()
            return Executed(0, kind)
        launcher.prepare()  # an image that cannot be pulled leaves no plan behind
        try:
            write_plan(plan, prepared.splits, code)
        except FileExistsError:  # another process took the name between the check and now
            raise UsageError(
                f"{kind} {plan.name!r} already exists in {config.logging.artifact_dir}; choose another --name"
            ) from None
    except BaseException:  # a planning error: the prestarted workers have run nothing; stop them
        if pool is not None:
            pool.discard()
        raise
    return launch_plan(LaunchRequest(kind, plan.name, plan.root, units, config, len(plan.runs)), launcher, then)


def resume_plan(kind: str, config: Config, explicit: AbstractSet[str], then: Then | None = None) -> Executed:
    """`--resume NAME` (and a retrain that exists): the runs still to do, launched like a new plan's."""
    resumed = prepare_resume(kind, config, explicit)
    config = resumed.config  # the plan's launcher, resources and container unless given now
    check_detach(config)
    print_drift(kind, resumed.name, resumed.drift)
    if not resumed.total:
        settled = "every run succeeded or was pruned" if resumed.n_pruned else "every run succeeded"
        print(f"{kind} {resumed.name}: {settled} already; nothing to resume")
        if config.launch.dry_run:
            return Executed(0, kind)
        code = collect_and_report(resumed.root, config.logging.quiet)
        code = then(kind, resumed.root, config, True, code) if then else code  # it ended
        return Executed(code, kind, resumed.name, resumed.root)

    check_job_resources(config)  # the launch options may have changed since planning
    launcher = make_launcher(config, kind, resumed.name, parse_devices(config.device.devices))
    units = work_units(
        resumed.run_dirs, parallel_strategy(config), runs_per_task(config, resumed.total, launcher)
    )
    check_room(load_plan(resumed.root), config, resumed.total, len(units), launcher.parallel_slots, resumed=True)
    if config.launch.dry_run:  # what the resume would submit; prepare_resume changed nothing
        print(resumed.where())
        print(launcher.describe(resumed.root, units, f"{kind} {resumed.name}"))
        return Executed(0, kind)
    if not config.logging.quiet:
        print(resumed.where())
    request = LaunchRequest(kind, resumed.name, resumed.root, units, config, resumed.total, resumed.record)
    return launch_plan(request, launcher, then)


def launch_plan(request: LaunchRequest, launcher: Launcher, then: Then | None) -> Executed:
    """A plan on disk, new or resumed: detached (the supervisor launches it and runs `then`) or launched here."""
    kind, root, config = request.kind, request.root, request.config
    if config.launch.detach:
        code = detach(request, then)
    else:
        code = launch_and_report(request, launcher)
        code = then(kind, root, config, _plan_ended(launcher, config), code) if then else code
    return Executed(code, kind, request.name, root)


def _plan_ended(launcher: Launcher, config: Config) -> bool:
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
        lines.append(
            f"  {str(cv.cv_name):<{width}}  {_hparams_line(cv.hparams, varying)}  {plural(len(cv.runs), 'run')}"
        )
    if fixed:
        lines.append(f"same in every trial: {_hparams_line(plan.cvs[0].hparams, fixed)}")
    return lines


def describe_retrain(plan: Any, splits: list[Split], config: Config) -> list[str]:
    """For a dry run of `tune --retrain`: what happens once the tune ended (issue 21 #13)."""
    if plan.kind != "tune" or not config.tune.retrain:
        return []
    test = set(splits[0].test) if splits else set()
    train = {s for split in splits for s in (*split.train, *split.val)} - test
    seeds = len({run.seed for run in plan.runs})
    when = "a SLURM job after the collector job runs" if config.launch.launcher == "slurm" else "then"
    return [
        f"--retrain: {when} nestling retrain {plan.root}: the best trial (by --select {config.tune.select}) trained "
        f"on {plural(len(train), 'sample')} (train + val) with {plural(seeds, 'seed')} for the median best epoch of "
        f"its runs, tested on the {len(test)} test samples, as {naming.final_name(plan.name)}"
    ]


def _hparams_line(hparams: dict[str, Any], keys: list[str]) -> str:
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


def launch_and_report(request: LaunchRequest, launcher: Launcher) -> int:
    """Launch the request here, save launch.json, wait as asked, then collect and report: an exit code."""
    kind, name, root, units, config = request.kind, request.name, request.root, request.units, request.config
    total, extra_record = request.total, request.record
    quiet = config.logging.quiet
    try:
        failfast.arm(root, config.launch.fail_fast)  # a fresh ledger: a resume starts counting again
        fault_ledger.open_launch(  # what this launch asks of its workers; broken nodes stay known
            root, config.launch.max_retries, config.launch.stage_dir, config.logging.keep_checkpoints
        )
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        raise storage_full(kind, name, root, None) from None
    if not quiet:
        print(f"{kind} {name}: {plural(total, 'run')} in {plural(len(units), 'work unit')} -> {root}")
    launcher.prepare()
    # a detached launch (SLURM) returns once submitted: a bar would stay at 0 of N; --wait polls it to the end
    bar = not quiet and (not launcher.detached or config.launch.wait)
    with RunProgress(total, f"{kind} {name}", quiet=not bar) as progress:
        try:
            record = launcher.launch(root, units, progress)
        except SubmitError as exc:
            if exc.record is None:
                raise
            save_launch_if_room(root, exc.record.updated({**extra_record, "finished_at": time.time()}))
            print(
                f"nestling: submission failed: {exc}; nothing runs; fix it and resume with --resume {name}",
                file=sys.stderr,
            )
            return 1
        save_launch_if_room(root, record.updated(extra_record))
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
    return collect_and_report(root, quiet, storage_was_full=bool(record.storage_full))


def _interrupted(kind: str, name: str, root: Path, config: Config) -> int:
    """Ctrl-C stopped the launch: say what is kept and the one command that continues it."""

    counts = collect.collect(root).counts
    total = sum(counts.values())
    where = "" if config.logging.artifact_dir == Config().logging.artifact_dir else (
        f" --artifact_dir {config.logging.artifact_dir}"
    )
    print(
        f"nestling: interrupted: {counts[RunState.SUCCESS]} of {total} runs finished, "
        f"{counts[RunState.MISSING]} interrupted or not started (kept in {root});\n"
        f"resume with: nestling {kind} --resume {name}{where}",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED


def save_launch(root: Path, record: LaunchRecord) -> None:
    """launch.json keeps every launch of a plan (each resume appends one)."""
    append_launch(root, record, now=time.time())


def save_launch_if_room(root: Path, record: LaunchRecord) -> None:
    """save_launch, unless the file system is full: the runs' own files say what happened, and the command's last
    line says the file system is full (status reads the plan's stop mark)."""
    try:
        save_launch(root, record)
    except OSError as exc:
        if not is_storage_error(exc):
            raise


def storage_full(kind: str, name: str, root: Path, collected: Collected | None) -> StorageFull:
    """The one line a sweep stopped by a full file system ends with: which file system, how much is free, what
    finished, and the command that continues once there is room."""
    here = storage.room(root)
    done = ""
    if collected is not None:
        counts = collected.counts
        total = sum(counts.values())
        done = (f"; {counts[RunState.SUCCESS]} of {total} runs finished, {counts[RunState.FAILED]} failed, "
                f"{counts[RunState.MISSING]} not run")  # fmt: skip
    again = {"cv": f"`nestling cv --resume {name}`", "tune": f"`nestling tune --resume {name}`",
             "retrain": f"`nestling retrain {root.parent}`"}.get(kind, "running it again")  # fmt: skip
    return StorageFull(
        f"{kind} {name}: the file system is full ({here.describe()}){done}; free space or raise the quota, then "
        f"{again} reruns what did not finish"
    )


def _print_follow_up(root: Path, record: LaunchRecord) -> None:
    jobs = ", ".join(record.job_ids or [])
    print(f"submitted: jobs {jobs}; collector job {record.collector_job_id}")
    print(f"follow:    nestling status {root} --watch")
    print(f"results:   nestling collect {root}   (the collector job runs it when the jobs end)")
    if record.extra.get("retrain_job_id"):
        print(f"retrain:   job {record.extra['retrain_job_id']} runs nestling retrain {root} after the collector")


def collect_and_report(root: Path, quiet: bool, storage_was_full: bool = False) -> int:
    """The end of every plan command: the tables, the summary and report (unless quiet), the outcome line. A sweep
    a full file system stopped (`storage_was_full`, or the plan's stop mark) ends in StorageFull instead."""
    try:
        collected = collect.collect(root)
    except OSError as exc:  # the tables do not fit: count from the results, write nothing
        if not is_storage_error(exc):
            raise
        collected, storage_was_full = collect.collect(root, write=False), True
    stop = failfast.stopped(root)
    if storage_was_full or (stop is not None and stop.storage):
        if not quiet:
            summary.print_summary(collected)
        raise storage_full(collected.plan.kind, collected.plan.name, root, collected)
    if not quiet:
        summary.print_summary(collected)
    if collected.plan.kind in ("cv", "tune", "retrain"):  # a retrain's report is its tune's page, now with it
        _report_beside_tables(root, collected, quiet)
    if stop is not None:
        print(f"nestling: {stop.message(collected.plan.name, error_shown=not quiet)}", file=sys.stderr)
    # --quiet silences progress and tables, never the outcome; without it the summary already listed the errors
    print(outcome_line(collected, errors_shown=not quiet), file=sys.stderr)
    if stop is not None:
        return 1
    return 0 if collected.counts[RunState.SUCCESS] > 0 else 1


def _report_beside_tables(root: Path, collected: Collected, quiet: bool) -> None:
    """report.html beside the tables. A report that cannot be written costs a warning, never the finished plan.

    The page only: its figures export themselves, and rendering PNGs took most of a report's time (issue 21);
    `nestling report DIR` writes them for slides."""
    try:
        path = write_report(root, collected, png=False)
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
    total = sum(counts.values())
    parts = [f"{plan.kind} {plan.name}: {counts[RunState.SUCCESS]} of {total} runs succeeded"]
    if counts[RunState.PRUNED] or collected.n_pruned_trials:  # the rest of the plan, stopped on purpose
        parts[0] += (f", {counts[RunState.PRUNED]} pruned ({plural(collected.n_pruned_trials, 'trial')} stopped "
                     "early)")  # fmt: skip
    laddered = [cv for cv in collected.cvs if cv.rung is not None]  # --pruner asha|hyperband
    if laddered:
        stopped = sum(cv.state is TrialState.PRUNED for cv in laddered)
        epochs = sum(cv.n_epochs_done for cv in collected.cvs)
        parts.append(f"{stopped} of {len(laddered)} trials pruned at a rung, {epochs} epochs trained")
    groups = summary.error_groups(collected)
    if groups and not errors_shown:
        first = next(e for cv in collected.cvs for e in cv.table.get_column("error").to_list() if e)
        parts.append(f"first error: {summary.error_line(first)}")
    elif groups:
        parts.append(f"{len(groups)} distinct error{'' if len(groups) == 1 else 's'} above")
    if counts[RunState.SUCCESS] + counts[RunState.PRUNED] < total:  # a single run: its own dir, not the _runs folder
        parts.append(f"see nestling status {summary.status_target(collected)}")
    return "; ".join(parts)
