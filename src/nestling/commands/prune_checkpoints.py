"""`nestling prune-checkpoints TUNE_DIR --keep K`: what --keep_checkpoints K does during a tune, after the fact.

The finished trials are ranked as the tables rank them; the checkpoints of every finished trial outside the K best
are removed (execute/checkpoint_keeping.py keeps what a resume, a paused promotion or a live run still needs), the
tables are rewritten (their checkpoint column says `removed`), and the command prints what it freed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nestling.core.errors import UsageError, strict_parser
from nestling.core.host.storage import human_bytes
from nestling.core.lazy import lazy_module
from nestling.core.tree.naming import RunPaths
from nestling.execute import checkpoint_keeping as keeping
from nestling.plan.model import Plan
from nestling.plan.settings import checkpoints_to_keep
from nestling.plan.store import find_plan_root, load_plan

if TYPE_CHECKING:
    from nestling.read import collect
else:
    collect = lazy_module("nestling.read.collect")


@dataclass(frozen=True)
class Pruned:
    """What prune-checkpoints removed (or, with dry_run, would remove), what it kept, and what it left alone."""

    removed: list[keeping.Removed]
    kept: list[str]  # the K best finished trials, best first
    unfinished: int  # trials still running, lost or paused: they keep their checkpoints
    dry_run: bool = False

    @property
    def freed_bytes(self) -> int:
        return sum(r.bytes for r in self.removed)

    def line(self, name: str) -> str:
        verb, freed = ("would remove", "would free") if self.dry_run else ("removed", "freed")
        runs = sum(r.runs for r in self.removed)
        parts = [f"prune-checkpoints {name}: {verb} the checkpoints of {len(self.removed)} trial(s) ({runs} runs), "
                 f"{freed} {human_bytes(self.freed_bytes)}"]  # fmt: skip
        parts.append(f"kept the {len(self.kept)} best: {', '.join(self.kept)}" if self.kept else "kept none")
        if self.unfinished:
            parts.append(f"{self.unfinished} unfinished trial(s) keep theirs")
        return "; ".join(parts)


def prune_checkpoints_main(argv: list[str], description: str) -> int:
    parser = strict_parser("nestling prune-checkpoints", description)
    parser.add_argument("dir", type=Path, help="a tune directory")
    parser.add_argument("--keep", required=True, help="how many of the best trials keep their checkpoints (K or none)")
    parser.add_argument("--dry_run", action="store_true", help="say what would be removed; remove nothing")
    args = parser.parse_args(argv)
    pruned = prune_tune_checkpoints(args.dir, args.keep, dry_run=args.dry_run)
    print(pruned.line(str(args.dir)))
    return 0


def prune_tune_checkpoints(dir: Path, keep: str | int, dry_run: bool = False) -> Pruned:
    """Remove the checkpoints of the tune's finished trials outside the `keep` best (none: every finished trial's)."""
    k = checkpoints_to_keep(str(keep))
    if k is None:
        raise UsageError(f"--keep {keep} keeps every checkpoint: nothing to remove; give a number, e.g. --keep 3")
    root = find_plan_root(Path(dir))
    plan = load_plan(root)
    if plan.kind != "tune":
        raise UsageError(
            f"{root} is a {plan.kind}, not a tune: prune-checkpoints ranks the trials of a tune (pass the tune dir)"
        )
    done = [i for i in range(len(plan.cvs)) if i not in keeping.removed_trials(root) and keeping.finished(root, plan, i)]
    unfinished = sum(1 for i in range(len(plan.cvs)) if i not in keeping.removed_trials(root) and i not in done)
    for index in done:
        keeping.record_rank(root, plan, index)
    order = keeping.ranked_trials(root)
    kept = [str(plan.cvs[i].cv_name) for i in order[:k]]
    if dry_run:
        would = [keeping.Removed(i, plan.cvs[i].cv_name, *_trial_checkpoints(plan, i)) for i in order[k:]]
        return Pruned([r for r in would if r.runs], kept, unfinished, dry_run=True)
    removed = keeping.enforce(root, plan, k)
    collect.collect(root)  # the tables say `removed` now
    return Pruned(removed, kept, unfinished)


def _trial_checkpoints(plan: Plan, index: int) -> tuple[int, int]:
    """(runs, bytes) prune would remove from trial `index`."""
    runs = [r.dir for r in plan.cvs[index].runs if keeping.removable(r.dir)]
    return len(runs), sum(keeping.folder_bytes(RunPaths(d).checkpoints) for d in runs)
