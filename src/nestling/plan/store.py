"""Putting a Plan on disk and reading the tree back: the artifact tree is nestling's only state.

Layout of a plan's root directory (tune dir, cv dir, or single-run dir):
  plan.json        kind, name, options, and every cv with its runs (names, ids, dirs relative to the root)
  plan.copy.json   the same bytes, written first: a plan.json that cannot be parsed is restored from it
  splits.json      the folds as sample id lists, shared by every run of the plan
  run_specs.jsonl  every RunSpec, one JSON line per run, fixed before anything executes; run_dir, splits_file and
                   code relative to the root, so the tree can be moved or copied
  _code/           the task's code snapshot the runs import (core/provenance/snapshot.py), linked in before plan.json
  <run dirs>       created when the run starts: its run_spec.json (its line of run_specs.jsonl), checkpoints,
                   logs, and run_result.json when it ends

Run dirs are not created at planning time: on a network or virtual disk 10,000 mkdirs and file creations take
1-3 s, more than planning and submitting the whole tune. Three files hold the complete plan instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from nestling.core.errors import UsageError
from nestling.core.provenance.record import Provenance, TakenCode
from nestling.core.provenance.snapshot import link_snapshot
from nestling.core.tree import damaged, naming
from nestling.core.tree.atomic import write_atomic, write_json
from nestling.core.tree.run_spec import RunSpec
from nestling.plan.model import CvPlan, Plan, PlannedRun
from nestling.plan.specs import run_specs

if TYPE_CHECKING:
    from nestling.core.ml.task import Split


def write_plan(plan: Plan, splits: list[Split], code: TakenCode | None = None) -> None:
    """Write the plan's code snapshot (`code`, linked from where it was taken), splits.json, run_specs.jsonl,
    plan.copy.json and plan.json last (its presence marks a complete plan)."""
    root = plan.root
    root.mkdir(parents=True, exist_ok=plan.kind == "run")
    if code is not None:
        link_snapshot(code.manifest, code.under, root)
    write_json(root / naming.SPLITS, [dataclasses.asdict(s) for s in splits])
    write_specs(plan)
    text = json.dumps(plan_record(plan), default=str) + "\n"  # as write_json(compact=True) writes it
    write_atomic(naming.plan_copy(root), text)
    write_atomic(root / naming.PLAN, text)


def write_specs(plan: Plan) -> None:
    """run_specs.jsonl: every run's spec, derived from the plan (plan/specs.py), so it can be derived again."""
    root = plan.root
    write_atomic(root / naming.RUN_SPECS, "".join(_spec_line(spec, root) + "\n" for spec in run_specs(plan)))


def update_plan_options(root: Path, group: str, values: dict[str, Any]) -> None:
    """plan.json with some options of one group replaced (a forced resume that scores on other metrics: the
    collector and the study read the scoring from here); every other key stays as written."""
    path = root / naming.PLAN
    data = json.loads(path.read_text())
    data["options"].setdefault(group, {}).update(values)
    write_json(path, data, compact=True)


def _spec_line(spec: RunSpec, root: Path) -> str:
    """The spec as stored: its paths relative to the plan root, so a moved or copied tree still points into
    itself (load_spec resolves them against the root it is found in)."""
    data = dict(vars(spec))  # a shallow dict: the same JSON as dataclasses.asdict, cheaper
    data["run_dir"] = _rel(spec.run_dir, root)
    data["splits_file"] = _rel(spec.splits_file, root)
    if spec.code is not None:
        data["code"] = _rel(spec.code, root)
    try:
        return json.dumps(data)
    except TypeError:  # a value json cannot take as is (a nested dataclass): the slow, general path
        return json.dumps({**spec.to_dict(), "run_dir": data["run_dir"], "splits_file": data["splits_file"],
                           "code": data["code"]})  # fmt: skip


def write_spec(spec: RunSpec, root: Path) -> None:
    """Write the run's run_spec.json (a forced resume's respecified run), its paths relative to the plan root."""
    paths = naming.RunPaths(Path(spec.run_dir))
    paths.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.spec, _spec_line(spec, root))


def load_spec(run_dir: Path) -> RunSpec:
    """The run's spec, written into its dir (created here) from the plan's run_specs.jsonl on first use.

    A run dir that already holds run_spec.json keeps it (a forced resume may have edited it). The spec's paths
    come back absolute, in the tree the run dir is in now (trees written before paths were stored relative keep
    their absolute splits_file)."""
    paths = naming.RunPaths(Path(run_dir))
    try:
        data = json.loads(paths.spec.read_text())
    except FileNotFoundError:
        pass
    except ValueError:  # cut short or edited: the planned spec is written again (a forced resume's edit is lost)
        damaged.warn(paths.spec, "not valid JSON", f"the run uses its planned spec from {naming.RUN_SPECS}")
    else:
        if data.get("trial") is None:
            return _resolved(data, paths.dir, None)
        root = find_plan_root(paths.dir)  # a forced resume may have rewritten it without the draw
        return _resolved(_with_draw(data, root), paths.dir, root)
    root = find_plan_root(paths.dir)
    specs = _planned_specs(root)
    try:
        data = specs[paths.dir.name]
    except KeyError:
        raise FileNotFoundError(f"no spec for run dir {paths.dir} in its plan's {naming.RUN_SPECS}") from None
    if data.get("trial") is not None:
        data = _with_draw(data, root)
    paths.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.spec, json.dumps(data))
    return _resolved(data, paths.dir, root)


def _with_draw(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """An adaptive trial's spec completed with its drawn configuration (study.py writes the draw file before the
    trial's first run starts; without it the spec cannot run)."""
    path = naming.TrialPaths(root).draw(int(data["trial"]))
    try:
        drawn = json.loads(path.read_text())["params"]
    except (FileNotFoundError, ValueError, KeyError):
        raise FileNotFoundError(f"trial {data['trial']} of {root} has no drawn configuration ({path})") from None
    return {**data, "hparams": {**data["hparams"], **drawn}}


def _resolved(data: dict[str, Any], run_dir: Path, root: Path | None) -> RunSpec:
    """The stored spec with run_dir = the dir it was found in, and splits_file and code resolved against the plan
    root (found by walking up as many levels as the stored run_dir has parts, when not given)."""
    here = os.path.abspath(run_dir)
    if root is None:
        base = here
        for _ in PurePosixPath(data["run_dir"]).parts:
            base = os.path.dirname(base)
    else:
        base = os.path.abspath(root)
    splits, code = data["splits_file"], data.get("code")
    return RunSpec.from_dict({
        **data, "run_dir": here, "splits_file": os.path.join(base, splits),
        **({"code": os.path.join(base, code)} if code else {}),
    })  # fmt: skip


_SPECS: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}


def _planned_specs(root: Path) -> dict[str, dict[str, Any]]:
    """run dir name -> spec dict, read once per process (a warm worker runs many runs of one plan)."""
    path = root / naming.RUN_SPECS
    key = (str(path), path.stat().st_mtime)
    if key not in _SPECS:
        _SPECS.clear()
        try:
            specs = [json.loads(line) for line in path.read_text().splitlines() if line]
        except ValueError:  # derived from plan.json: derive it again
            damaged.warn(path, "not valid JSON lines", "derived again from plan.json")
            write_specs(load_plan(root))
            return _planned_specs(root)
        # stored run_dirs are relative to the root ("." for a single run), or absolute in older trees
        _SPECS[key] = {os.path.basename(os.path.normpath(os.path.join(root, s["run_dir"]))): s for s in specs}
    return _SPECS[key]


def plan_record(plan: Plan) -> dict[str, Any]:
    return {
        "kind": plan.kind,
        "name": plan.name,
        "n_folds": plan.n_folds,
        "options": plan.options,
        **({"space": plan.space} if plan.space is not None else {}),
        **({"provenance": plan.provenance.to_json()} if plan.provenance is not None else {}),
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
                        "dir": _rel(r.dir, plan.root),
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


def find_plan_root(path: Path) -> Path:
    """The nearest directory at or above `path` holding plan.json (a run dir inside a tune finds the tune)."""
    path = Path(path).resolve()
    for candidate in (path, *path.parents):
        if (candidate / naming.PLAN).is_file():
            return candidate

    raise UsageError(
        f"{str(path)!r} is not inside a nestling tune, cv or run directory (no {naming.PLAN} found)"
    )


def plan_data(root: Path) -> dict[str, Any]:
    """plan.json, parsed. One that cannot be parsed is restored from plan.copy.json (and says so); without an
    intact copy it is refused (UsageError, exit 2): the plan defines every run, so nothing can be guessed."""
    path = Path(root) / naming.PLAN
    text = path.read_bytes()
    data = _plan_json(text)
    if data is not None:
        return data
    copy = naming.plan_copy(root)
    try:
        saved = copy.read_bytes()
    except FileNotFoundError:
        saved = b""
    restored = _plan_json(saved)
    if restored is None:
        raise UsageError(
            f"{path} cannot be read (cut short or edited) and there is no intact copy ({copy.name}); restore it "
            "from a backup: the run results beside it are intact"
        )
    os.replace(path, path.with_name(f"{naming.PLAN}.unreadable"))
    write_atomic(path, saved)
    damaged.warn(path, "cut short or edited", f"restored from {copy.name}; the damaged file is kept as "
                 f"{naming.PLAN}.unreadable")  # fmt: skip
    return restored


def _plan_json(text: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and {"kind", "name", "cvs", "options"} <= set(data) else None


def load_plan(root: Path) -> Plan:
    root = Path(root)
    data = plan_data(root)
    cvs = [
        CvPlan(
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
    return Plan(data["kind"], data["name"], root, cvs, data["n_folds"], data["options"], data.get("space"),
                Provenance.from_json(data.get("provenance")))  # fmt: skip


def fold_val_train_ratios(root: Path) -> list[float]:
    """n_val / n_train of each fold of the plan (splits.json, in fold order): the Nadeau-Bengio correction of a cv's
    spread needs it (scoring.corrected_sem). An unreadable splits.json or an empty train set gives NaN, so the
    corrected sem is NaN rather than a guess."""
    try:
        splits = json.loads((Path(root) / naming.SPLITS).read_bytes())
    except (FileNotFoundError, ValueError):
        return []
    return [len(s["val"]) / len(s["train"]) if s.get("train") else float("nan") for s in splits]
