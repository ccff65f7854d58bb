"""Tunes of the bowl task, run through the real study (draws, pruning) with simulated workers
(testing/bowl_workers), for the tests of the tables, the console summaries and the report: a tree in a fraction of a
second."""

from __future__ import annotations

import json
from pathlib import Path

from nestling.core.tree import naming
from nestling.plan.store import load_plan
from nestling.plan.units import run_dirs_per_cv, work_units
from nestling.testing.bowl_workers import plan_bowl_tune, simulate_unit


def bowl_tune(tmp_path: Path, name: str, *extra: str, n_trials: int = 6, n_folds: int = 3, run: bool = True) -> Path:
    """A bowl tune planned in `tmp_path` (testing/bowl_workers.plan_bowl_tune) and, with `run`, every run simulated in
    series, as one worker would."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = plan_bowl_tune(tmp_path, name, *extra, n_trials=n_trials, n_folds=n_folds)
    if run:
        for unit in work_units(run_dirs_per_cv(load_plan(root)), "serial"):
            simulate_unit(unit.run_dirs)
    return root


def fail(run_dir: Path, error: str = "RuntimeError: boom") -> None:
    """Turn a run's result into a failure with `error`."""
    path = run_dir / naming.RUN_RESULT
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "status": "failed", "error": error, "metrics": {}}))
