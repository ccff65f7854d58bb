"""Tunes of the bowl task, run through the real study (draws, pruning) with simulated workers
(testing/bowl_workers), for the tests of the tables, the console summaries and the report: a tree in a fraction of a
second."""

from __future__ import annotations

import json
from pathlib import Path

from nestling.core.options.config import parse_config
from nestling.core.tree import naming
from nestling.execute.search import study
from nestling.plan.preflight import prepare
from nestling.plan.store import load_plan, write_plan
from nestling.plan.units import run_dirs_per_cv, work_units
from nestling.testing.bowl_workers import simulate_unit

SPACE = """
[hyperparameters]
lr = {distribution = "loguniform", low = 1e-5, high = 1.0}
width = {low = 0.0, high = 1.0}
depth = {low = 1, high = 10}
"""


def bowl_tune(tmp_path: Path, name: str, *extra: str, n_trials: int = 6, n_folds: int = 3, run: bool = True) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    argv = ["--task", "bowl", "--hpconfig", str(space), "--n_trials", str(n_trials), "--n_folds", str(n_folds),
            "--n_seeds", "1", "--artifact_dir", str(tmp_path / "art"), "--name", name, *extra]  # fmt: skip
    prepared = prepare(parse_config(argv, prog="nestling tune"), "tune")
    write_plan(prepared.plan, prepared.splits)
    study._STUDIES.clear()
    root = prepared.plan.root
    if run:
        for unit in work_units(run_dirs_per_cv(load_plan(root)), "serial"):
            simulate_unit(unit.run_dirs)
    return root


def fail(run_dir: Path, error: str = "RuntimeError: boom") -> None:
    """Turn a run's result into a failure with `error`."""
    path = run_dir / naming.RUN_RESULT
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "status": "failed", "error": error, "metrics": {}}))
