"""Threads sized to the CPUs a worker was given (issue 21 #2): the same cv with nestling's thread limits and with
torch's default threads, in the same run.

Before issue 21 an array task started torch with one thread per core of its node whatever `--cpus_per_task` said
(the local launcher set only OMP_NUM_THREADS), so tasks sharing a node without core binding fought for it: the
issue's tune took 60 s instead of 16 s. Here: a cv of 8 runs of bench/_digits.py's MLP (4 folds x 2 seeds, 3
epochs), as many runs at once as this machine has cores, each with one CPU:

- SLURM: `--launcher slurm --cpus_per_task 1 --array_parallelism CORES` on the local cluster (`--wait`);
- local: `--strategy cv-parallel --accelerator cpu --devices CORES` (one worker per core).

"default threads" is the behaviour before on SLURM and submitit-local: `OMP_NUM_THREADS` and `MKL_NUM_THREADS` set to
the core count in the submitting environment (what torch chose by itself; a variable the user set is kept, so this
reproduces it). The local pool set OMP_NUM_THREADS already, so its row shows what the bound buys, not a change.
Figures: the wall time of the whole command, and the median run `duration` from run_infos.parquet.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from bench._common import (
    ClusterUnavailable,
    Row,
    cluster_env,
    env,
    judge,
    nestling_cmd,
    scratch,
    standalone,
    timed,
)
from nestling.core.host.worker_limits import THREAD_VARIABLES, available_cpus

NAME = "threads"
CV = ["cv", "--task", "bench._digits:TASK", "--n_folds", "4", "--n_seeds", "2", "--max_epochs", "3",
      "--accelerator", "cpu", "--quiet"]  # fmt: skip


def _cv(tmp: Path, name: str, launcher: list[str], base: dict[str, str], default_threads: bool) -> tuple[float, float]:
    import polars as pl

    e = {k: v for k, v in base.items() if k not in THREAD_VARIABLES}
    if default_threads:  # torch's own choice before issue 21: every core, whatever the task was given
        e.update(OMP_NUM_THREADS=str(os.cpu_count() or 1), MKL_NUM_THREADS=str(os.cpu_count() or 1))
    wall, _ = timed(nestling_cmd(*CV, *launcher, "--artifact_dir", str(tmp), "--name", name), env=e)
    runs = pl.read_parquet(tmp / "_cross_validations" / name / "run_infos.parquet")
    return wall, statistics.median(runs["duration"].to_list())


def run(quick: bool = False) -> list[Row]:
    """The same cv with threads bounded to each task's CPUs and with torch's default threads, SLURM and local."""
    cores = available_cpus({})
    cases: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("local, cv-parallel", ["--strategy", "cv-parallel", "--devices", str(cores)], env()),
    ]
    try:
        slurm_env: dict[str, str] | None = cluster_env()
    except ClusterUnavailable:
        slurm_env = None
    cases.insert(0, ("SLURM", ["--strategy", "cv-parallel", "--launcher", "slurm", "--cpus_per_task", "1",
                               "--mem_gb", "1", "--array_parallelism", str(cores), "--wait"], slurm_env))  # fmt: skip
    rows = []
    repeats = 1 if quick else 2
    for label, launcher, base in cases:
        case = f"{label}: 8 runs, {cores} at once, 1 CPU each"
        if base is None:
            rows.append(Row(NAME, case, None, note="skipped: SLURM is not installed", quick=quick))
            continue
        bounded, unbounded = [], []
        with scratch(NAME) as tmp:
            for i in range(repeats):  # alternate, so that a load change hits both alike
                unbounded.append(_cv(tmp, f"default{i}", launcher, base, default_threads=True))
                bounded.append(_cv(tmp, f"bounded{i}", launcher, base, default_threads=False))
        (wall, run_s), (base_wall, base_run_s) = min(bounded), min(unbounded)
        rows.append(Row(
            NAME, case, wall, base_wall, baseline_name=f"torch's default {os.cpu_count()} threads",
            target="ratio < 1", met=judge(wall / base_wall, "<", 1.0), quick=quick,
            note=f"median run {run_s:.2f} s against {base_run_s:.2f} s; best of {repeats}: walls bounded "
                 f"{', '.join(f'{w:.1f}' for w, _ in bounded)} s, default {', '.join(f'{w:.1f}' for w, _ in unbounded)} s",
        ))  # fmt: skip
    return rows


if __name__ == "__main__":
    standalone(NAME, run)
