"""Makespan on SLURM: runs that each hold one (fake) GPU for 10 s, on the local cluster's 4 GPUs.

nestling: `nestling cv --task sleep --hp sleep_s=10 --strategy cv-parallel --launcher slurm --gpus_per_task 1
--accelerator cpu --cpus_per_task 1 --mem_gb 1` (one array task per run). Baseline, same run, same resources: plain
submitit `map_array` of a function that imports torch and lightning and sleeps 10 s (bench/_submitit_baseline.py).
Makespan = from the start of the submitting command to the last result written (the newest run_result.json / done
file mtime); ideal = total work / 4 GPUs; efficiency = ideal / makespan.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import Any

from bench._common import (
    PYTHON,
    ClusterUnavailable,
    Row,
    cluster_env,
    judge,
    nestling_cmd,
    scancel,
    scratch,
    squeue_ids,
    standalone,
    timed,
)

NAME = "makespan"
GPUS = 4  # the local cluster: 2 nodes x 2 fake GPUs


def wait_files(pattern: str, n: int, timeout: float) -> list[float]:
    """mtimes of the files matching `pattern` once there are n of them (or what is there at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        files = glob.glob(pattern)
        if len(files) >= n or time.monotonic() > deadline:
            return sorted(os.stat(f).st_mtime for f in files)
        time.sleep(0.2)


def nestling_makespan(e: dict[str, str], tmp: Path, name: str, n_runs: int, sleep_s: float,
                      runs_per_task: int = 1, timeout: float = 600, wait_parquet: bool = True) -> dict[str, Any]:  # fmt: skip
    """Submit a cv of n_runs sleep runs (detached), wait for every run_result.json; figures in seconds."""
    seeds = 1 if n_runs <= 10 else 2
    folds = n_runs // seeds
    assert folds * seeds == n_runs, "n_runs must be <= 10 or even"
    args = ["cv", "--task", "sleep", "--hp", f"sleep_s={sleep_s}", "--max_epochs", "1", "--n_folds", str(folds),
            "--n_seeds", str(seeds), "--strategy", "cv-parallel", "--launcher", "slurm", "--accelerator", "cpu",
            "--gpus_per_task", "1", "--cpus_per_task", "1", "--mem_gb", "1", "--runs_per_task", str(runs_per_task),
            "--artifact_dir", str(tmp), "--name", name, "--quiet"]  # fmt: skip
    root = tmp / "_cross_validations" / name
    start = time.time()
    submit_s, _ = timed(nestling_cmd(*args), env=e)
    times: list[float] = []
    parquet: list[float] = []
    try:
        times = wait_files(str(root / "*" / "run_result.json"), n_runs, timeout)
        done = time.time()
        if wait_parquet:  # the collector job's table: when a user has the results without running anything
            parquet = wait_files(str(root / "run_infos.parquet"), 1, 60)
    finally:
        launch = _last_launch(root)
        job_ids = [launch.get("collector_job_id"), *launch.get("job_ids", [])]
        if len(times) < n_runs or (wait_parquet and not parquet):
            scancel(e, job_ids)
    wait_queue(e, job_ids if wait_parquet else job_ids[1:])
    return {
        "submit_s": submit_s,
        "makespan_s": (times[-1] - start) if len(times) == n_runs else None,
        "first_result_s": times[0] - start if times else None,
        "parquet_s": (parquet[-1] - start) if parquet else None,
        "results": len(times),
        "polled_s": done - start,
        "job_ids": job_ids,
    }


def baseline_makespan(
    e: dict[str, str], tmp: Path, n: int, sleep_s: float, timeout: float = 600
) -> dict[str, Any]:
    out = tmp / "submitit-done"
    out.mkdir()
    start = time.time()
    submit_s, stdout = timed([PYTHON, "-m", "bench._submitit_baseline", str(n), str(sleep_s), str(out),
                              str(tmp / "submitit")], env=e)  # fmt: skip
    job_id = stdout.strip().splitlines()[-1]
    times: list[float] = []
    try:
        times = wait_files(str(out / "done-*"), n, timeout)
    finally:
        if len(times) < n:
            scancel(e, [job_id])
    wait_queue(e, [job_id])
    return {"submit_s": submit_s, "makespan_s": (times[-1] - start) if len(times) == n else None,
            "first_result_s": times[0] - start if times else None, "results": len(times)}  # fmt: skip


def wait_queue(e: dict[str, str], job_ids: list[Any], timeout: float = 60) -> None:
    """Let our jobs leave the queue (the collector job, task epilogues) before the next measurement starts."""
    ids = [str(j) for j in job_ids if j]
    deadline = time.monotonic() + timeout
    while ids and squeue_ids(e, ids) and time.monotonic() < deadline:
        time.sleep(0.3)


def _last_launch(root: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((root / "launch.json").read_text())["launches"][-1]
    except (FileNotFoundError, ValueError, KeyError, IndexError):
        return {}


def run(quick: bool = False) -> list[Row]:
    """Makespan of 10-s runs on the 4 fake GPUs: nestling (cv-parallel array) vs plain submitit map_array."""
    n, sleep_s = (4, 10.0) if quick else (16, 10.0)  # quick: one wave; full: four waves
    try:
        e = cluster_env()
    except ClusterUnavailable as exc:
        return [Row(NAME, f"{n} runs x {sleep_s:.0f} s", None, note=f"skipped: {exc}", quick=quick)]
    ideal = n * sleep_s / GPUS
    pack = n // GPUS  # one array task per GPU, its runs in series: the start-up is paid 4 times, not n times
    with scratch(NAME) as tmp:
        ours = nestling_makespan(e, tmp, "makespan", n, sleep_s)
        base = baseline_makespan(e, tmp, n, sleep_s)
        packed = nestling_makespan(e, tmp, "packed", n, sleep_s, runs_per_task=pack) if pack > 1 else None
    label = f"{n} runs x {sleep_s:.0f} s on {GPUS} GPUs"
    rows = []
    figures = [("nestling", ours), ("submitit map_array", base)]
    if packed is not None:
        figures.append((f"nestling --runs_per_task {pack}", packed))
    for who, fig in figures:
        eff = ideal / fig["makespan_s"] if fig["makespan_s"] else None
        rows.append(
            Row(NAME, f"{label}: efficiency, {who}", eff, None, unit="", target=">= 0.9", met=judge(eff, ">=", 0.9),
                quick=quick, note=f"{who}: makespan {_s(fig['makespan_s'])} vs ideal {ideal:.0f} s; submit command "
                f"{fig['submit_s']:.1f} s; first result after {_s(fig['first_result_s'])}"
                + (f"; run_infos.parquet (collector job) after {_s(fig.get('parquet_s'))}" if "nestling" in who else ""))
        )  # fmt: skip
    rows.append(
        Row(NAME, f"{label}: makespan", ours["makespan_s"], base["makespan_s"], baseline_name="submitit map_array",
            target="ratio <= 1.1", met=judge((ours["makespan_s"] or 0) / (base["makespan_s"] or 1), "<=", 1.1)
            if ours["makespan_s"] and base["makespan_s"] else None, quick=quick)
    )  # fmt: skip
    return rows


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    standalone(NAME, run)
