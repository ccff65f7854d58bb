"""Whether the artifact dir can hold a plan (issue 23 §2): its files and bytes, projected before anything is written,
against the free inodes and space of the file system and the user's quota (core/host/storage.py).

Files come from the layout (docs/reliability.md lists them): a run dir holds 11 entries (run_spec.json,
attempts.json, run_result.json, checkpoints/ with best.ckpt and last.ckpt, logs/attempt-1/ with metrics.csv and
hparams.yaml), one more for error.txt or the attempt lock; an offline W&B run adds about 16. Bytes come from a
finished run of the same task when one exists (the plan's own on a resume, else the newest plan of the task in the
artifact dir): its run dir's blocks, checkpoints apart so that --keep_checkpoints counts. Without one, only the
layout's lower bound counts (each file one block), and the checkpoints are said to be unknown: a guess never refuses
a plan. A plan that cannot fit is refused with exit 2; one that would take 80 % or more of what is free is warned
about.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nestling.core.errors import UsageError
from nestling.core.host import storage
from nestling.core.host.storage import Room, human_bytes
from nestling.core.tree import naming
from nestling.plan.model import Plan
from nestling.plan.settings import checkpoints_to_keep

if TYPE_CHECKING:
    from nestling.core.options.config import Config

FILES_PER_RUN = 12  # the run dir's 11 entries, and error.txt or the attempt lock
DATA_FILES_PER_RUN = 7  # of which files (not directories): each takes at least one block
FILES_PER_WANDB_RUN = 16  # wandb/offline-run-*/: the .wandb file, files/, logs/, tmp/ and their contents
FILES_PER_CV = 3  # run_infos.parquet, its stamp, the cv dir of a tune
FILES_PER_PLAN = 30  # plan.json and its copy, splits.json, run_specs.jsonl, launch.json, the ledgers, the report
FILES_PER_UNIT = {"slurm": 3, "submitit-local": 6, "local": 0}  # SLURM: a claim and two logs per array task
WARN_SHARE = 0.8
MEASURED_RUNS = 5  # finished runs whose dirs are measured


@dataclass(frozen=True)
class RunSize:
    """What one finished run of the task takes on disk: its checkpoints, and everything else."""

    checkpoint_bytes: int
    other_bytes: int
    source: Path  # the plan it was measured in


@dataclass(frozen=True)
class Projection:
    files: int
    bytes: int
    runs: int
    size: RunSize | None  # None: bytes are the layout's lower bound, checkpoints not counted

    def describe(self) -> str:
        how = (f"{human_bytes(self.size.checkpoint_bytes + self.size.other_bytes)} a run as measured in "
               f"{self.size.source}" if self.size else "checkpoints not counted: no finished run of this task to "
               "measure yet")  # fmt: skip
        return f"about {self.files:,} files and {human_bytes(self.bytes)} for {self.runs:,} runs ({how})"


def project(
    plan: Plan, runs: int, units: int, launcher: str, block: int, size: RunSize | None, *, wandb: bool = False,
    keep_trials: int | None = None, slots: int = 1,
) -> Projection:  # fmt: skip
    """The files and bytes `runs` runs of `plan` in `units` work units will add (pure). With --keep_checkpoints K
    only the checkpoints of K trials, and of those that run meanwhile, stay on disk at once."""
    per_run = FILES_PER_RUN + (FILES_PER_WANDB_RUN if wandb else 0)
    files = runs * per_run + len(plan.cvs) * FILES_PER_CV + FILES_PER_PLAN + units * FILES_PER_UNIT.get(launcher, 0)
    if size is None:
        data_files = runs * (DATA_FILES_PER_RUN + (FILES_PER_WANDB_RUN if wandb else 0))
        return Projection(files, data_files * block, runs, None)
    kept = runs
    if keep_trials is not None and plan.kind == "tune" and plan.cvs:
        per_trial = max(1, len(plan.cvs[0].runs))
        kept = min(runs, per_trial * (keep_trials + max(1, slots)))
    return Projection(files, runs * size.other_bytes + kept * size.checkpoint_bytes, runs, size)


def check(projection: Projection, room: Room, where: str) -> str | None:
    """Refuse (UsageError, exit 2) a projection the room cannot hold; a warning line when it takes 80 % or more of
    it; None when it fits well. `where` names the directory for the user (--artifact_dir)."""
    fix = ("fewer runs (--n_trials, --n_seeds, --n_folds), --keep_checkpoints K for a tune, another --artifact_dir, "
           "or more room (free space, a larger quota)")  # fmt: skip
    if room.free_files is not None and projection.files > room.free_files:
        raise UsageError(
            f"the plan needs {projection.describe()}, but {where} has {room.free_files:,} inodes free "
            f"({room.describe()}): {fix}"
        )
    if projection.bytes > room.free_bytes:
        raise UsageError(
            f"the plan needs {projection.describe()}, but {where} has {human_bytes(room.free_bytes)} free "
            f"({room.describe()}): {fix}"
        )
    shares = [projection.bytes / room.free_bytes if room.free_bytes else 1.0]
    if room.free_files:
        shares.append(projection.files / room.free_files)
    if max(shares) >= WARN_SHARE:
        return (
            f"warning: the plan needs {projection.describe()}: {max(shares):.0%} of what {where} has free "
            f"({room.describe()})"
        )
    return None


def measure(plan_roots: list[Path]) -> RunSize | None:
    """A finished run's size on disk, from the first of these plans that has successful runs: the mean of up to
    MEASURED_RUNS of their dirs (allocated blocks, checkpoints apart)."""
    for root in plan_roots:
        sizes = [_run_size(d) for d in _finished_runs(root)]
        if sizes:
            n = len(sizes)
            return RunSize(sum(c for c, _ in sizes) // n, sum(o for _, o in sizes) // n, root)
    return None


def same_task_plans(artifact_dir: Path, task: str, limit: int = 10) -> list[Path]:
    """The newest plans in `artifact_dir` (tunes, cvs) whose runs train `task`, newest first, at most `limit` looked
    at; a plan's task is read from the first line of its run_specs.jsonl (plan.json may be megabytes)."""
    candidates: list[tuple[float, Path]] = []
    for parent in (artifact_dir, artifact_dir / naming.CV_ROOT):
        try:
            entries = list(os.scandir(parent))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            specs = os.path.join(entry.path, naming.RUN_SPECS)
            try:
                candidates.append((os.stat(specs).st_mtime, Path(entry.path)))
            except (FileNotFoundError, NotADirectoryError):
                continue
    found = []
    for _, root in sorted(candidates, reverse=True)[:limit]:
        try:
            with open(root / naming.RUN_SPECS) as f:
                first = f.readline()
        except OSError:
            continue
        if f'"task": "{task}"' in first:
            found.append(root)
    return found


def _finished_runs(root: Path) -> list[Path]:
    """Up to MEASURED_RUNS run dirs below `root` (a cv, or the cvs of a tune) with a result and checkpoints."""
    found: list[Path] = []
    stack = [root]
    while stack and len(found) < MEASURED_RUNS:
        here = stack.pop()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("_"):
                continue
            path = Path(entry.path)
            if (path / naming.RUN_RESULT).is_file() and (path / naming.CHECKPOINTS).is_dir():
                found.append(path)
                if len(found) == MEASURED_RUNS:
                    break
            elif here == root:
                stack.append(path)  # a cv dir of a tune
    return found


def _run_size(run_dir: Path) -> tuple[int, int]:
    """(checkpoint bytes, other bytes) of a run dir, as allocated blocks."""
    checkpoints = other = 0
    for dirpath, _, names in os.walk(run_dir):
        in_checkpoints = Path(dirpath).name == naming.CHECKPOINTS
        for name in names:
            try:
                used = os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                continue
            if in_checkpoints:
                checkpoints += used
            else:
                other += used
    return checkpoints, other


def check_room(plan: Plan, config: Config, runs: int, units: int, slots: int, resumed: bool = False) -> Projection:
    """Project `runs` runs of `plan` (all of a new plan, a resume's reruns) and check them against the artifact dir's
    room: UsageError when they cannot fit, a warning on stderr at 80 %. The projection, for a dry run to show."""
    artifact_dir = Path(config.logging.artifact_dir)
    room = storage.room(plan.root if resumed else artifact_dir)
    roots = [plan.root] if resumed else []
    size = measure([*roots, *same_task_plans(artifact_dir, config.data.task)])
    projection = project(
        plan, runs, units, config.launch.launcher, os.statvfs(room.path).f_frsize, size,
        wandb=bool(config.logging.wandb_project), keep_trials=checkpoints_to_keep(config.logging.keep_checkpoints),
        slots=slots,
    )  # fmt: skip
    warning = check(projection, room, f"--artifact_dir {artifact_dir}")
    if warning is not None:
        print(f"nestling: {warning}", file=sys.stderr)
    return projection
