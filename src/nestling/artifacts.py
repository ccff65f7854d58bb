"""Putting a Plan on disk and reading the tree back: the artifact tree is nestling's only state.

Layout of a plan's root directory (tune dir, cv dir, or single-run dir):
  plan.json      kind, name, options, and every cv with its runs (names, ids, dirs relative to the root)
  splits.json    the folds as sample id lists, shared by every run of the plan
  <run dirs>     each with run_spec.json before it starts and run_result.json when it ends
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling import naming
from nestling.records import RunSpec, write_atomic, write_json

if (
    TYPE_CHECKING
):  # not at run time: `nestling status` and `collect` only read the tree (config/simple-parsing cost)
    from nestling.plan import Plan
    from nestling.task import Split


def write_plan(plan: Plan, splits: list[Split]) -> None:
    """Create the tree: splits, every run_spec.json, and plan.json last (its presence marks a complete tree)."""
    root = plan.root
    root.mkdir(parents=True, exist_ok=plan.kind == "run")
    write_json(root / naming.SPLITS, [dataclasses.asdict(s) for s in splits])
    for cv in plan.cvs:
        cv.dir.mkdir(parents=True, exist_ok=True)
        for run in cv.runs:
            _write_spec(run)
    write_json(root / naming.PLAN, plan_record(plan))


def _write_spec(run: RunSpec) -> None:
    """run_spec.json into a new run dir. Cheap on purpose (a tune of 10,000 runs writes 10,000): os calls instead
    of pathlib, a shallow dict instead of dataclasses.asdict's deep copy (same JSON), and a plain exclusive create
    instead of tmp + rename: nothing reads a spec before plan.json, written last, marks the tree complete."""
    run_dir = run.run_dir
    try:
        os.mkdir(run_dir)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(run_dir, exist_ok=True)
    try:
        text = json.dumps(vars(run))
    except TypeError:  # a value json cannot take as is (a nested dataclass): the slow, general path
        text = json.dumps(run.to_dict())
    path = os.path.join(run_dir, naming.RUN_SPEC)
    try:
        with open(path, "x") as f:
            f.write(text)
    except FileExistsError:  # a re-written tree: replace atomically, a reader may be looking
        write_atomic(Path(path), text)


def plan_record(plan: Plan) -> dict[str, Any]:
    return {
        "kind": plan.kind,
        "name": plan.name,
        "n_folds": plan.n_folds,
        "options": plan.options,
        "cvs": [
            {
                "cv_name": cv.cv_name,
                "hp_index": cv.hp_index,
                "hparams": cv.hparams,
                "dir": _rel(cv.dir, plan.root),
                "runs": [
                    {
                        "run_name": r.run_name,
                        "run_id": r.run_id,
                        "fold": r.fold,
                        "seed": r.seed,
                        "dir": _rel(r.run_dir, plan.root),
                    }
                    for r in cv.runs
                ],
            }
            for cv in plan.cvs
        ],
    }


def _rel(path: Path | str, root: Path) -> str:
    text, prefix = str(path), f"{root}{os.sep}"
    if os.sep == "/" and text.startswith(prefix) and "/.." not in text and "/./" not in text:
        return text[len(prefix) :]  # the common case, without pathlib (10,000 runs: 10,000 calls)
    rel = Path(path).relative_to(root).as_posix()
    return rel or "."


@dataclass(frozen=True)
class PlannedRun:
    run_name: str
    run_id: str
    fold: int
    seed: int
    dir: Path


@dataclass(frozen=True)
class PlannedCv:
    cv_name: str | None
    hp_index: int | None
    hparams: dict[str, Any]
    dir: Path
    runs: list[PlannedRun]


@dataclass(frozen=True)
class PlanOnDisk:
    kind: str
    name: str
    root: Path
    options: dict[str, Any]
    cvs: list[PlannedCv]

    @property
    def runs(self) -> list[PlannedRun]:
        return [r for cv in self.cvs for r in cv.runs]


def find_plan_root(path: Path) -> Path:
    """The nearest directory at or above `path` holding plan.json (a run dir inside a tune finds the tune)."""
    path = Path(path).resolve()
    for candidate in (path, *path.parents):
        if (candidate / naming.PLAN).is_file():
            return candidate
    from nestling.errors import UsageError

    raise UsageError(
        f"{str(path)!r} is not inside a nestling tune, cv or run directory (no {naming.PLAN} found)"
    )


def load_plan(root: Path) -> PlanOnDisk:
    root = Path(root)
    data = json.loads((root / naming.PLAN).read_text())
    cvs = [
        PlannedCv(
            cv_name=cv["cv_name"],
            hp_index=cv["hp_index"],
            hparams=cv["hparams"],
            dir=root / cv["dir"],
            runs=[
                PlannedRun(r["run_name"], r["run_id"], r["fold"], r["seed"], root / r["dir"])
                for r in cv["runs"]
            ],
        )
        for cv in data["cvs"]
    ]
    return PlanOnDisk(kind=data["kind"], name=data["name"], root=root, options=data["options"], cvs=cvs)
