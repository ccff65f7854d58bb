"""`--resume NAME`: continue a tune or cv from its artifact tree, never redoing finished work.

The saved plan is re-read (trials are never re-sampled); runs whose result is success are skipped; failed, missing
and lost runs run again with the same run_name and run_id and the next attempt number (a failed result is kept as
run_result.attempt-N.json). An adaptive tune (study.py) keeps its drawn and pruned trials: a lost trial reruns
with its drawn configuration, trials never drawn are drawn when they start, with every result known. Options that define the plan must not change: an option given on the command line (or
set away from its default) that differs from the saved plan is refused with a diff unless --force, which applies
changed training/device options to the reruns (their RunSpecs derived again by plan/specs.py, through the same device
rule as planning) and rescores with changed scoring options (--scoring_metric, --multi_score_strategy: plan.json
takes them, runs that succeeded are kept and rescored from the metrics they logged, the tables are recomputed);
options --force cannot apply are refused even with it. Launch and container options may change freely (e.g.
resume a local sweep on SLURM).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling.core.errors import UsageError
from nestling.core.ml.scoring import parse_scoring_metrics
from nestling.core.options.config import EPOCH_PRUNERS, Config, config_from_dict
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
from nestling.plan.model import Plan, PlannedRun
from nestling.plan.settings import checkpoints_to_keep
from nestling.plan.specs import run_specs
from nestling.plan.store import load_plan, update_plan_options, write_spec
from nestling.read.run_states import run_states

PLAN_GROUPS = ("data", "training", "cv", "tune", "device")  # what the saved plan was made from
APPLIED_ON_FORCE = {
    "training": ("max_epochs", "early_stopping_patience"),
    "device": ("accelerator", "strategy", "devices", "num_nodes"),
    "cv": ("scoring_metric", "multi_score_strategy"),  # rescoring: the tables are recomputed, nothing retrained
}
IGNORED = {("logging", "name"), ("launch", "resume"), ("launch", "force"), ("training", "hp")}  # --hp: as hparams
FROM_INVOCATION = {("tune", "retrain")}  # what happens after the plan: taken from this invocation when given


@dataclass(frozen=True)
class Resumption:
    """What a resume hands back to `start.resume_plan`: the runs to redo (grouped per cv, as planned), the
    configuration to launch them with, and what changed since planning (recorded in launch.json)."""

    name: str
    root: Path
    config: Config  # the saved plan's options, with this invocation's launch/container options (and forced ones)
    run_dirs: list[list[str]]  # per cv, the run dirs to run again; empty when every run succeeded
    changes: list[str]  # the option changes found (applied only with --force)
    n_pruned: int = 0  # runs that stay unrun: their trial was pruned

    @property
    def total(self) -> int:
        return sum(len(dirs) for dirs in self.run_dirs)

    @property
    def record(self) -> dict[str, Any]:
        """The fields a resume adds to its launch.json entry."""
        forced = self.changes if self.config.launch.force else []
        return {"resume": True, "rerun": self.total, "forced_changes": forced}


def prepare_resume(kind: str, config: Config, explicit: AbstractSet[str]) -> Resumption:
    """Check the saved plan against this invocation and make the tree ready for the reruns (failed results
    archived, stale locks removed, forced changes written into the rerun specs); launching is the caller's.
    `explicit`: the options given in this invocation (config.explicit_options of the command line)."""
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
    effective = _effective(saved, config, changes)
    rescored = {c.key: c.after for c in changes if c.group == "cv"}
    if rescored:
        _check_rescoring(plan, effective)
    if "keep_checkpoints" in explicit:  # a storage policy, not the plan: the reruns' launch takes it
        checkpoints_to_keep(config.logging.keep_checkpoints)  # a bad value: exit 2 before anything changes
        effective = dataclasses.replace(
            effective, logging=dataclasses.replace(effective.logging, keep_checkpoints=config.logging.keep_checkpoints)
        )
    given = {k: getattr(config.tune, k) for g, k in FROM_INVOCATION if g == "tune" and k in explicit}
    effective = dataclasses.replace(effective, tune=dataclasses.replace(effective.tune, **given))
    respecified = run_specs(plan, effective) if changes else []  # refuses a strategy a worker cannot run
    _refuse_if_active(plan)
    todo = [run for run in plan.runs if result_state(run.dir) is not RunState.SUCCESS]
    n_pruned = 0
    if plan.kind == "tune":  # adaptive search: pruned trials stay pruned; a draw its worker never wrote is redone

        pruned = pruned_trials(plan.root)
        kept = {run.dir.name for i, cv in enumerate(plan.cvs) if i in pruned for run in cv.runs}
        n_pruned = sum(run.dir.name in kept for run in todo)  # stay unrun
        todo = [run for run in todo if run.dir.name not in kept]
        forget_unwritten_draws(plan.root)
        todo += _waiting_at_rungs(plan, {run.dir.name for run in todo})
        rerun = {run.dir.name for run in todo}
        reopen(plan.root, {i for i, cv in enumerate(plan.cvs) if any(r.dir.name in rerun for r in cv.runs)})
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
    return Resumption(name, root, effective, per_cv if todo else [], [str(c) for c in changes], n_pruned)


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
    for group in PLAN_GROUPS:
        for key, value in now[group].items():
            if (group, key) in IGNORED | FROM_INVOCATION or (key not in explicit and value == defaults[group][key]):
                continue
            if value != before[group].get(key):
                changes.append(Change(group, key, before[group].get(key), value))
    for key, value in now["hparams"].items():
        if before["hparams"].get(key) != value:
            changes.append(Change("hparams", key, before["hparams"].get(key), value))
    return changes


def _effective(saved: Config, current: Config, forced: list[Change]) -> Config:
    """The saved plan's options, with this invocation's launch/container options and the forced changes."""
    device, training, cv = saved.device, saved.training, saved.cv
    device = dataclasses.replace(device, **{c.key: c.after for c in forced if c.group == "device"})
    training = dataclasses.replace(training, **{c.key: c.after for c in forced if c.group == "training"})
    cv = dataclasses.replace(cv, **{c.key: c.after for c in forced if c.group == "cv"})
    logging = dataclasses.replace(saved.logging, quiet=current.logging.quiet)
    return dataclasses.replace(
        saved,
        device=device,
        training=training,
        cv=cv,
        logging=logging,
        launch=current.launch,
        container=current.container,
    )


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
