"""--keep_checkpoints K (issue 23 §3): a tune keeps the checkpoints of its K best trials and removes the others' as
soon as the tune knows they rank outside the K best ("HDD got filled with hundreds of checkpoints", ray#9865).

A trial's rank never improves once it finished: trials that finish later can only push it down. So when a trial
finishes (its last run's worker calls `trial_finished`), its rank key (cv_table.rank_key, the tables' own ranking)
goes into `{tune}/_checkpoints/ranked/{i}.json`, and every finished trial listed there that ranks below K others is
removed at once: its entry moves to `removed/{i}.json` (what was freed, when). The ledger holds only the trials
still keeping checkpoints, so each finish reads about K small files, not one per trial of the tune. Two workers
that finish at once both enforce the rule; removal is idempotent.

Never removed: a run without a final result (in progress, lost, interrupted: its last.ckpt is where it resumes),
a failed run (a resume continues from its checkpoint), a run paused at a rung (its promotion continues from it),
a run a live attempt holds, and anything of a retrain (its own plan). Pruned and failed trials rank last, so their
checkpoints go first. `nestling prune-checkpoints TUNE --keep K` applies the same rule after the fact.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling.core.errors import UsageError
from nestling.core.tree import attempt_lock, fault_ledger, naming
from nestling.core.tree.atomic import write_json
from nestling.core.tree.clock import utc_now
from nestling.core.tree.naming import KeptCheckpointPaths
from nestling.core.tree.run_epochs import run_epochs
from nestling.core.tree.run_result import read_result
from nestling.core.tree.run_state import RunState
from nestling.execute.cv_table import CvSummary, _collect_cvs, _plan_index, file_stamp, rank_key
from nestling.plan.model import Plan
from nestling.plan.settings import checkpoints_to_keep


@dataclass(frozen=True)
class Removed:
    """The checkpoints removed from one trial."""

    index: int
    cv_name: str | None
    runs: int
    bytes: int


def keep_limit(plan: Plan) -> int | None:
    """K, or None when the tune keeps every checkpoint (the default, and every plan that is no tune). The launch's
    value (a resume may give another), else the plan's."""
    if plan.kind != "tune":
        return None
    launched = fault_ledger.policy(plan.root).keep_checkpoints
    try:
        return checkpoints_to_keep(launched if launched is not None else plan.settings.keep_checkpoints)
    except UsageError:  # (preflight refused it when the plan was made: an edited plan.json)
        return None


def removed_trials(root: Path) -> set[int]:
    """The trials whose checkpoints were removed (the tables say `removed` in their checkpoint column)."""
    try:
        names = os.listdir(KeptCheckpointPaths(root).removed_dir)
    except FileNotFoundError:
        return set()
    return {int(n.removesuffix(".json")) for n in names if n.endswith(".json") and n[:-5].isdigit()}


def trial_finished(root: Path, run_dir: Path) -> list[Removed]:
    """After a run ended: when its trial has finished, rank it and remove the checkpoints of every finished trial
    outside the K best. Never raises: the checkpoints stay until the next trial finishes or prune-checkpoints."""
    try:
        plan, where, _ = _plan_index(str(root), file_stamp(root / naming.PLAN))
        k = keep_limit(plan)
        index = where.get(os.path.normpath(run_dir))
        if k is None or index is None or not finished(root, plan, index):
            return []
        record_rank(root, plan, index)
        return enforce(root, plan, k)
    except Exception:  # noqa: BLE001 - keeping fewer checkpoints must never cost a run
        return []


def finished(root: Path, plan: Plan, index: int) -> bool:
    """Every run of trial `index` ended for good (none running, lost or paused at a rung), or its trial was pruned."""
    cv = plan.cvs[index]
    if naming.TrialPaths(root).pruned(index).exists():
        return not any(attempt_lock.alive(run.dir) for run in cv.runs)
    return all(_final(run.dir) for run in cv.runs)


def summary(root: Path, plan: Plan, index: int) -> CvSummary:
    """Trial `index` as the tables see it (its score and state), for its rank."""
    cv = plan.cvs[index]
    pruned = {0} if naming.TrialPaths(root).pruned(index).exists() else set()
    settings = plan.settings
    (one,) = _collect_cvs([cv], settings.scoring(), settings.multi_score_strategy, pruned,
                          val_train=_plan_index(str(root), file_stamp(root / naming.PLAN))[2])  # fmt: skip
    return one


def record_rank(root: Path, plan: Plan, index: int) -> None:
    """Put finished trial `index` into the ledger of trials that keep their checkpoints (unless already removed)."""
    paths = KeptCheckpointPaths(root)
    if paths.removed(index).exists():
        return
    key = rank_key(summary(root, plan, index), plan.settings.select)
    paths.ranked_dir.mkdir(parents=True, exist_ok=True)
    write_json(paths.ranked(index), {"index": index, "key": [None if _nan(v) else v for v in key]})


def ranked_trials(root: Path) -> list[int]:
    """The finished trials that still keep their checkpoints, best first."""
    return [index for _, index in sorted(_ledger(root))]


def enforce(root: Path, plan: Plan, k: int) -> list[Removed]:
    """Remove the checkpoints of every ranked trial below the K best of the ledger."""
    return [r for index in ranked_trials(root)[k:] if (r := remove(root, plan, index)) is not None]


def remove(root: Path, plan: Plan, index: int) -> Removed | None:
    """Remove the checkpoints of trial `index`'s finished, successful runs; record it; the cv's table is then
    rewritten by the next collect (its checkpoint column says `removed`)."""
    cv = plan.cvs[index]
    runs = freed = 0
    for run in cv.runs:
        if not removable(run.dir):
            continue
        folder = naming.RunPaths(run.dir).checkpoints
        freed += folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        runs += 1
    paths = KeptCheckpointPaths(root)
    paths.removed_dir.mkdir(parents=True, exist_ok=True)
    if not paths.removed(index).exists():
        write_json(paths.removed(index), {"index": index, "cv_name": cv.cv_name, "runs": runs, "bytes": freed,
                                          "at": utc_now()})  # fmt: skip
    paths.ranked(index).unlink(missing_ok=True)
    naming.run_infos_stamp(cv.dir).unlink(missing_ok=True)
    return Removed(index, cv.cv_name, runs, freed) if runs else None


def _ledger(root: Path) -> list[tuple[list[Any], int]]:
    folder = KeptCheckpointPaths(root).ranked_dir
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        try:
            data = json.loads((folder / name).read_text())
            out.append(([math.inf if v is None else v for v in data["key"]], int(data["index"])))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            continue  # being written, or damaged: the trial keeps its checkpoints for now
    return out


def _final(run_dir: Path) -> bool:
    """The run ended for good: a result, not paused at a rung (its promotion continues from the checkpoint)."""
    return run_epochs(read_result(run_dir)).final


def removable(run_dir: Path) -> bool:
    """A successful run that ended for good, with checkpoints, and no live attempt holds it."""
    result = read_result(run_dir)
    return (result is not None and result.status is RunState.SUCCESS and not run_epochs(result).paused
            and naming.RunPaths(run_dir).checkpoints.is_dir() and not attempt_lock.alive(run_dir))  # fmt: skip


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
