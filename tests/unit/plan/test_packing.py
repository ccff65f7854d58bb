"""Packing short runs: --runs_per_task chosen from --expected_run_s (pure rule + through a dry run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nestling.plan.units import auto_runs_per_task


@pytest.mark.parametrize(
    ("expected_s", "n_runs", "slots", "k"),
    [
        (1.0, 40, 4, 10),  # start-up 10 s wants 100 one-second runs a task; capped to keep 4 slots busy
        (1.0, 1000, 4, 100),  # enough runs: start-up is 10% of a 100-run task
        (100.0, 40, 4, 1),  # long runs: no packing
        (20.0, 40, 4, 5),  # ceil(10 / 2) = 5
        (0.5, 3, 8, 1),  # fewer runs than slots: one run per task
    ],
)
def test_auto_runs_per_task(expected_s: float, n_runs: int, slots: int, k: int) -> None:
    assert auto_runs_per_task(expected_s, n_runs, slots) == k


def test_expected_run_s_packs_array_tasks_in_dry_run(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "nestling.cli", "cv", "--task", "sleep", "--launcher", "slurm", "--strategy",
        "cv-parallel", "--n_folds", "4", "--n_seeds", "10", "--expected_run_s", "1", "--array_parallelism", "4",
        "--accelerator", "cpu", "--artifact_dir", str(tmp_path), "--name", "packed", "--dry_run",
    ]  # fmt: skip
    # no SLURM commands on PATH: MaxArraySize falls back to 1001 and the sinfo check is skipped
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "40 runs in 4 array tasks" in done.stdout
    assert "#SBATCH --array=0-3%4" in done.stdout


def test_expected_run_s_must_be_positive(tmp_path: Path) -> None:
    from nestling.commands.cli import main

    assert main(["cv", "--expected_run_s", "0", "--artifact_dir", str(tmp_path / "a")]) == 2
    assert not (tmp_path / "a").exists()
