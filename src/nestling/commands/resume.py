"""`--resume NAME`: continue a tune or cv from its artifact tree, never redoing finished work.

The saved plan is re-read (trials are never re-sampled); runs whose result is success are skipped; failed, missing
and lost runs run again with the same run_name and run_id and the next attempt number (a failed result is kept as
run_result.attempt-N.json). An adaptive tune (study.py) keeps its drawn and pruned trials: a lost trial reruns
with its drawn configuration, trials never drawn are drawn when they start, with every result known.

Every option is one of four kinds (docs/reliability.md, "What a resume takes from the plan"):
- it defines the plan (PLAN_GROUPS): given now (on the command line or in a --config file) with another value than
  the saved plan's, it is refused with a diff unless --force, which applies the training/device/wandb-mode options
  of APPLIED_ON_FORCE to the reruns (their RunSpecs derived again by plan/specs.py, through the same device rule as
  planning) and rescores with changed scoring options (--scoring_metric, --multi_score_strategy: plan.json takes
  them, runs that succeeded are kept and rescored from the metrics they logged, the tables are recomputed); the
  others are refused even with it;
- it says where and how the reruns run (FROM_PLAN_UNLESS_GIVEN: launcher, SLURM resources, container): the saved
  plan's, unless given now (e.g. resume a SLURM sweep locally with --launcher local); a resume typed on a login node
  runs where the plan ran (issue 21 #1);
- it belongs to this invocation (PER_INVOCATION: --dry_run, --wait, --detach, --quiet, --artifact_dir, ...), or is
  taken from it when given (FROM_INVOCATION: --retrain, --keep_checkpoints, a storage policy);
- it is ignored (IGNORED: --name, the resumed plan names itself).

The reruns import the task from the plan's code snapshot, whatever the tree holds now; --force takes the current
code instead (a new snapshot in the plan's _code, shared when nothing changed). What changed since the plan (code,
with the files named; environment; data) is reported either way, also when nothing is left to run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling.commands.code_capture import take_code
from nestling.core.errors import UsageError
from nestling.core.ml.scoring import parse_scoring_metrics
from nestling.core.options.config import EPOCH_PRUNERS, GROUPS, Config, config_from_dict, option_names
from nestling.core.provenance.drift import drift
from nestling.core.tree import attempt_lock as attempt
from nestling.core.tree import naming
from nestling.core.tree import supervisor_pid as supervision
from nestling.core.tree.launch_record import read_launches
from nestling.core.tree.run_epochs import run_epochs
from nestling.core.tree.run_result import archive_result, read_result, result_state
from nestling.core.tree.run_spec import RunSpec
from nestling.core.tree.run_state import RunState
from nestling.execute.search.rungs import Board
from nestling.execute.search.study import forget_unwritten_draws, pruned_trials, reopen
from nestling.launch.base import plural
from nestling.plan.model import Plan, PlannedRun
from nestling.plan.settings import checkpoints_to_keep
from nestling.plan.specs import run_specs
from nestling.plan.store import load_plan, update_plan_options, write_spec
from nestling.read.run_states import run_states

PLAN_GROUPS = ("data", "training", "cv", "tune", "device", "logging")  # what the saved plan was made from
APPLIED_ON_FORCE = {
    "training": ("max_epochs", "early_stopping_patience"),
    "device": ("accelerator", "strategy", "devices", "num_nodes"),
    "logging": ("wandb_mode",),
    "cv": ("scoring_metric", "multi_score_strategy"),  # rescoring: the tables are recomputed, nothing retrained
}
FROM_PLAN_UNLESS_GIVEN = ("launch", "container")  # where and how the reruns run: as planned, unless given now
PER_INVOCATION = {
    ("launch", "dry_run"), ("launch", "detach"), ("launch", "wait"), ("launch", "resume"), ("launch", "force"),
    ("logging", "quiet"), ("logging", "artifact_dir"),  # where the tree is now (it may have moved)
}  # fmt: skip
IGNORED = {("logging", "name"), ("training", "hp")}  # --hp: compared as hparams
FROM_INVOCATION = {  # taken from this invocation when given: what happens after the plan, a storage policy
    ("tune", "retrain"), ("logging", "keep_checkpoints"),
}


@dataclass(frozen=True)
class Resumption:
    """What a resume hands back to `start.resume_plan`: the runs to redo (grouped per cv, as planned), the
    configuration to launch them with, and what changed since planning (recorded in launch.json)."""

    name: str
    root: Path
    config: Config  # the saved plan's options, with the launch/container options given now (and forced ones)
    run_dirs: list[list[str]]  # per cv, the run dirs to run again; empty when every run succeeded
    changes: list[str]  # the option changes found (applied only with --force)
    overrides: tuple[str, ...] = ()  # launch/container options given now instead of the plan's
    n_pruned: int = 0  # runs that stay unrun: their trial was pruned
    drift: list[str] = dataclasses.field(default_factory=list)  # what changed since the plan: code, env, data
    code: str | None = None  # the code snapshot a forced resume took for its reruns (_code/{key})

    @property
    def total(self) -> int:
        return sum(len(dirs) for dirs in self.run_dirs)

    @property
    def record(self) -> dict[str, Any]:
        """The fields a resume adds to its launch.json entry."""
        forced = self.changes if self.config.launch.force else []
        return {"resume": True, "rerun": self.total, "forced_changes": forced, "launch_overrides": list(self.overrides),
                "drift": self.drift, **({"code": self.code} if self.code else {})}  # fmt: skip

    def where(self) -> str:
        """One line for the console: which launcher runs the reruns, and why that one."""
        launcher = self.config.launch.launcher
        why = ", ".join(f"--{k}" for k in self.overrides) + " given" if self.overrides else "as planned"
        image = f" in {self.config.container.container_image}" if self.config.container.container_image else ""
        return f"resuming {self.name}: {plural(self.total, 'run')} on --launcher {launcher}{image} ({why})"


def prepare_resume(kind: str, config: Config, explicit: AbstractSet[str]) -> Resumption:
    """Check the saved plan against this invocation and make the tree ready for the reruns (failed results
    archived, stale locks removed, forced changes written into the rerun specs); launching is the caller's.
    `explicit`: the options given in this invocation (config.given_options: its command line and --config keys)."""
    name = naming.validate_name(config.launch.resume or "", "--resume name")
    if kind == "run":
        raise UsageError(
            "--resume is for nestling cv and nestling tune; a single run is resumed by its cv or tune"
        )
    root = naming.top_dir(Path(config.logging.artifact_dir).resolve(), kind, name)  # absolute run dirs
    if not (root / naming.PLAN).is_file():
        raise UsageError(
            f"no {kind} named {name!r} in {config.logging.artifact_dir} (no {root / naming.PLAN}); check --artifact_dir"
        )
    plan = load_plan(root)
    saved = config_from_dict(plan.options)
    changes = changed_options(saved, config, explicit)
    if changes and not config.launch.force:
        raise UsageError(
            f"{kind} {name!r} was planned with other options: {'; '.join(map(str, changes))}; drop them to resume "
            "as planned, or add --force"
        )
    fixed = [c for c in changes if not c.applicable]
    if fixed:
        raise UsageError(
            f"{kind} {name!r}: {'; '.join(map(str, fixed))} would change the plan itself, which --force cannot do "
            f"(it applies {', '.join(f'--{k}' for keys in APPLIED_ON_FORCE.values() for k in keys)}); drop them "
            f"or start a new {kind}"
        )
    pruner = saved.tune.pruner
    if plan.kind == "tune" and pruner in EPOCH_PRUNERS and any(c.key == "max_epochs" for c in changes):
        raise UsageError(
            f"tune {name!r} prunes between epochs (--pruner {pruner}): its rungs end at --max_epochs "
            f"{saved.training.max_epochs}, so --max_epochs cannot change on resume; drop it, or start a new tune"
        )
    effective = _effective(saved, config, changes, explicit)
    rescored = {c.key: c.after for c in changes if c.group == "cv"}
    if rescored:
        _check_rescoring(plan, effective)
    if "keep_checkpoints" in explicit:  # a storage policy, not the plan: a bad value exits 2 before anything changes
        checkpoints_to_keep(config.logging.keep_checkpoints)
    effective = _taken_from_invocation(effective, config, explicit)
    respecified = run_specs(plan, effective) if changes else []  # refuses a strategy a worker cannot run
    _refuse_if_active(plan)
    forced = config.launch.force
    dry_run = config.launch.dry_run  # says what a resume would run; changes nothing in the tree
    # (the current code is taken before the drift check imports the plan's snapshot to ask for the data digest)
    code = take_code(effective, into=root) if forced and plan.provenance is not None and not dry_run else None
    found = drift(plan.provenance, root, saved.data.task, forced=forced)
    if code is not None and plan.provenance is not None:  # the reruns import the current code
        plan = dataclasses.replace(plan, provenance=dataclasses.replace(plan.provenance, code=code.ref))
        respecified = run_specs(plan, effective)
    todo = [run for run in plan.runs if result_state(run.dir) is not RunState.SUCCESS]
    n_pruned = 0
    if plan.kind == "tune":  # adaptive search: pruned trials stay pruned; a draw its worker never wrote is redone

        pruned = pruned_trials(plan.root)
        kept = {run.dir.name for i, cv in enumerate(plan.cvs) if i in pruned for run in cv.runs}
        n_pruned = sum(run.dir.name in kept for run in todo)  # stay unrun
        todo = [run for run in todo if run.dir.name not in kept]
        todo += _waiting_at_rungs(plan, {run.dir.name for run in todo})
        if not dry_run:
            forget_unwritten_draws(plan.root)
            rerun = {run.dir.name for run in todo}
            reopen(plan.root, {i for i, cv in enumerate(plan.cvs) if any(r.dir.name in rerun for r in cv.runs)})
    if not dry_run:
        for run in todo:
            if not run_epochs(read_result(run.dir)).paused:  # a paused run goes on from its checkpoint, as it is
                _archive_failed_result(run.dir)
            attempt.remove_if_stale(run.dir)
        if respecified:
            _apply_forced(plan.root, respecified, todo)
        if rescored:  # the scoring the collector, the study and a retrain read
            update_plan_options(plan.root, "cv", rescored)
    wanted = {str(r.dir) for r in todo}
    per_cv = [[str(r.dir) for r in cv.runs if str(r.dir) in wanted] for cv in plan.cvs]
    overrides = tuple(
        sorted(k for k in explicit if _group_of(k) in FROM_PLAN_UNLESS_GIVEN and not _per_invocation(k))
    )
    return Resumption(name, root, effective, per_cv if todo else [], [str(c) for c in changes], overrides=overrides,
                      n_pruned=n_pruned, drift=found.lines, code=code.ref if code else None)  # fmt: skip


@dataclass(frozen=True)
class Change:
    group: str  # a Config group, or "hparams"
    key: str
    before: Any
    after: Any

    @property
    def applicable(self) -> bool:
        """Whether a forced resume can give this change to the reruns (the rest would change the plan itself)."""
        return self.key in APPLIED_ON_FORCE.get(self.group, ())

    def __str__(self) -> str:
        flag = f"--hp {self.key}" if self.group == "hparams" else f"--{self.key}"
        return f"{flag} {self.before!r} -> {self.after!r}"


def changed_options(saved: Config, current: Config, explicit: AbstractSet[str] = frozenset()) -> list[Change]:
    """Options set in this invocation (given on the command line, or differing from the defaults, e.g. from a
    config file) whose value differs from the saved plan's."""
    defaults = Config().to_dict()
    now, before = current.to_dict(), saved.to_dict()
    changes = []
    skipped = IGNORED | FROM_INVOCATION | PER_INVOCATION
    for group in PLAN_GROUPS:
        for key, value in now[group].items():
            if (group, key) in skipped or (key not in explicit and value == defaults[group][key]):
                continue
            if value != before[group].get(key):
                changes.append(Change(group, key, before[group].get(key), value))
    for key, value in now["hparams"].items():
        if before["hparams"].get(key) != value:
            changes.append(Change("hparams", key, before["hparams"].get(key), value))
    return changes


def _effective(saved: Config, current: Config, forced: list[Change], given: AbstractSet[str]) -> Config:
    """The saved plan's options, with the forced changes, the launch/container options given now, and this
    invocation's own (PER_INVOCATION)."""

    def merged(group: str) -> Any:
        mine = {
            f.name: getattr(getattr(current, group), f.name)
            for f in dataclasses.fields(getattr(saved, group))
            if (group, f.name) in PER_INVOCATION or (group in FROM_PLAN_UNLESS_GIVEN and f.name in given)
        }
        mine.update({c.key: c.after for c in forced if c.group == group})
        return dataclasses.replace(getattr(saved, group), **mine)

    return dataclasses.replace(saved, **{group: merged(group) for group in GROUPS})


def _taken_from_invocation(effective: Config, current: Config, given: AbstractSet[str]) -> Config:
    """FROM_INVOCATION options given now replace the plan's (what happens after the plan, how much it keeps)."""
    for group, key in FROM_INVOCATION:
        if key in given:
            value = getattr(getattr(current, group), key)
            effective = dataclasses.replace(
                effective, **{group: dataclasses.replace(getattr(effective, group), **{key: value})}
            )
    return effective


def _group_of(key: str) -> str:
    return option_names()[key]


def _per_invocation(key: str) -> bool:
    return (_group_of(key), key) in PER_INVOCATION


def _check_rescoring(plan: Plan, effective: Config) -> None:
    """A resume that scores on other metrics keeps every run that succeeded, rescored from the metrics it logged:
    refuse metrics none of them logged (while none succeeded yet, the reruns will tell)."""
    scoring = parse_scoring_metrics(effective.cv.scoring_metric)
    logged: set[str] = set()
    for run in plan.runs:
        result = read_result(run.dir)
        if result is not None and result.status is RunState.SUCCESS:
            logged.update(result.metrics)
    missing = [m.name for m in scoring if m.name not in logged]
    if logged and missing:
        raise UsageError(
            f"--scoring_metric {' '.join(effective.cv.scoring_metric)}: no finished run of {plan.name!r} logged "
            f"{', '.join(missing)}; they logged {', '.join(sorted(logged))}"
        )


def _refuse_if_active(plan: Plan) -> None:
    """A run dir is never shared by two live attempts: refuse while any run of the plan is running or queued, or
    while a detached supervisor (--detach) runs the plan."""

    supervisor = supervision.live_supervisor(plan.root)
    if supervisor is not None:
        raise UsageError(
            f"{plan.kind} {plan.name!r} is run by a detached supervisor ({supervisor.describe()}); follow it with "
            f"nestling status {plan.root}, or stop it with nestling stop {plan.root}, then resume"
        )
    # Without launch.json (a local driver killed mid-sweep) every unfinished run reads "pending", so only a live
    # attempt lock ("running") counts; with one, queued SLURM tasks count too.
    launches_exist = bool(read_launches(plan.root))  # (a launch.json that cannot be read holds none)
    active = [
        s for s in run_states(plan)
        if s.state is RunState.RUNNING or (s.state.is_queued() and launches_exist)
    ]
    if active:
        jobs = sorted({s.job.split("_")[0] for s in active if s.job})
        where = f" (jobs {', '.join(jobs)})" if jobs else ""
        raise UsageError(
            f"{len(active)} runs of {plan.name!r} are still running or queued{where}; wait for them "
            f"(nestling status {plan.root} --watch) or cancel them, then resume"
        )


def _waiting_at_rungs(plan: Plan, todo: set[str]) -> list[PlannedRun]:
    """--pruner asha|hyperband: the paused runs of trials neither pruned nor finished (paused at a rung, or
    promoted when the tune stopped). They go back to the workers, which decide their rungs and train what is
    promoted from the checkpoints: nothing is trained again."""
    board = Board.from_root(plan.root)
    if board is None:
        return []
    waiting = []
    for trial in board.trials():
        if trial.pruned or board.finished(trial.index):
            continue
        waiting += [run for run in plan.cvs[trial.index].runs if run.dir.name not in todo]
    return waiting


def _archive_failed_result(run_dir: Path) -> None:
    result = read_result(run_dir)
    if result is not None:
        archive_result(run_dir, result)
        return
    paths = naming.RunPaths(run_dir)
    if paths.result.exists():  # no reader could parse it (named on stderr): kept aside, the run runs again
        os.replace(paths.result, paths.unreadable_result)


def _apply_forced(root: Path, respecified: list[RunSpec], todo: list[PlannedRun]) -> None:
    """Write the respecified RunSpec (plan/specs.py derived it from the forced configuration) into each rerun's dir."""
    rerun = {str(run.dir) for run in todo}
    for spec in respecified:
        if spec.run_dir in rerun:
            write_spec(spec, root)
