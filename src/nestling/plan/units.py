"""Runs -> work units: what one worker (one array task on SLURM) runs in series, per parallel strategy."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from nestling.plan.model import Plan, WorkUnit

if TYPE_CHECKING:  # config (simple-parsing) is imported where a plan is made or derived, not where one is read
    pass

WORKER_STARTUP_S = 10.0  # a fresh Python + torch + lightning start on a busy node (measured 2.6-18 s)
STARTUP_SHARE = 0.1  # packing aims to keep start-up under this share of a task's time


def auto_runs_per_task(expected_run_s: float, n_runs: int, parallel_slots: int) -> int:
    """Runs per array task so that the worker start-up costs at most ~10% of a task, while every slot stays busy.

    K = ceil(start-up / (share * run time)), capped at ceil(n_runs / slots) so packing never idles a GPU.
    """
    wanted = math.ceil(WORKER_STARTUP_S / (STARTUP_SHARE * max(expected_run_s, 1e-3)))
    cap = max(1, math.ceil(n_runs / max(1, parallel_slots)))
    return max(1, min(wanted, cap))


def work_units(cv_run_dirs: list[list[str]], strategy: str, runs_per_task: int = 1) -> list[WorkUnit]:
    """Group run dirs (given per cv) into units of work by parallel strategy.

    cv-parallel: one unit per run (or per `runs_per_task` runs); tune-parallel: one unit per cv, its runs in
    series; otherwise one unit for everything.
    """
    if strategy == "cv-parallel":
        dirs = [d for cv in cv_run_dirs for d in cv]
        k = max(1, runs_per_task)
        groups = [dirs[i : i + k] for i in range(0, len(dirs), k)]
    elif strategy == "tune-parallel":
        groups = [list(cv) for cv in cv_run_dirs]
    else:
        groups = [[d for cv in cv_run_dirs for d in cv]]
    return [WorkUnit(i, g) for i, g in enumerate(g for g in groups if g)]


def run_dirs_per_cv(plan: Plan) -> list[list[str]]:
    return [[str(r.dir) for r in cv.runs] for cv in plan.cvs]
