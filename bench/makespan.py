"""Makespan on SLURM: runs that each hold one (fake) GPU for 10 s, on the local cluster's 4 GPUs.

nestling: `nestling tune --task sleep --hp sleep_s=10 --strategy cv-parallel --launcher slurm --gpus_per_task 1
--accelerator cpu --cpus_per_task 1 --mem_gb 1` (one array task per run; a task that finished its run takes over
runs whose tasks still wait, so each of the 4 running tasks starts Python + torch once). Baseline, same run, same
resources: plain submitit `map_array` of a function that imports torch and lightning and sleeps 10 s
(bench/_submitit_baseline.py), one Python start per task. The full run adds a sweep of 96 runs, where the start-up
(4 workers importing torch + Lightning at once on this machine's 2 cores: about 17 s) weighs less.
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
    write_space,
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
                      extra: tuple[str, ...] = (), timeout: float = 900, wait_parquet: bool = True) -> dict[str, Any]:  # fmt: skip
    """Submit a tune of n_runs sleep runs (n_runs / 4 trials x 4 folds, detached), wait for every run_result.json."""
    folds = 4 if n_runs % 4 == 0 else 1
    space = write_space(
        tmp / f"{name}-space.toml", value=[round(0.01 * i, 2) for i in range(n_runs // folds)]
    )
    args = ["tune", "--task", "sleep", "--hp", f"sleep_s={sleep_s}", "--max_epochs", "1", "--n_folds", str(folds),
            "--n_seeds", "1", "--hpconfig", str(space), "--sampler", "grid", "--n_trials", str(n_runs // folds),
            "--strategy", "cv-parallel", "--launcher", "slurm", "--accelerator", "cpu", "--gpus_per_task", "1",
            "--cpus_per_task", "1", "--mem_gb", "1", *extra, "--artifact_dir", str(tmp), "--name", name,
            "--quiet"]  # fmt: skip
    root = tmp / name
    start = time.time()
    submit_s, _ = timed(nestling_cmd(*args), env=e)
    times: list[float] = []
    parquet: list[float] = []
    try:
        times = wait_files(str(root / "*" / "*" / "run_result.json"), n_runs, timeout)
        done = time.time()
        if wait_parquet:  # the collector job's table: when a user has the results without running anything
            parquet = wait_files(str(root / "tune_infos.parquet"), 1, 60)
    finally:
        launch = _last_launch(root)
        job_ids = [launch.get("collector_job_id"), *launch.get("job_ids", [])]
        if len(times) < n_runs or (wait_parquet and not parquet):
            scancel(e, job_ids)
    wait_queue(e, job_ids if wait_parquet else job_ids[1:])
    starts = _worker_starts(root)
    return {
        "submit_s": submit_s,
        "makespan_s": (times[-1] - start) if len(times) == n_runs else None,
        "first_result_s": times[0] - start if times else None,
        "parquet_s": (parquet[-1] - start) if parquet else None,
        "results": len(times),
        "polled_s": done - start,
        "job_ids": job_ids,
        "processes": starts,
    }


def _worker_starts(root: Path) -> int:
    """How many worker processes ran the runs (distinct host, pid): the Python + torch start-ups paid."""
    import json

    seen = set()
    for path in glob.glob(str(root / "*" / "*" / "run_result.json")):
        result = json.loads(Path(path).read_text())
        seen.add((result.get("host"), result.get("pid")))
    return len(seen)


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
    """Makespan of 10-s runs on the 4 fake GPUs: nestling against plain submitit map_array, then a larger sweep."""
    compare, sweep, sleep_s = (8, 0, 10.0) if quick else (16, 96, 10.0)
    try:
        e = cluster_env()
    except ClusterUnavailable as exc:
        return [Row(NAME, f"{compare} runs x {sleep_s:.0f} s", None, note=f"skipped: {exc}", quick=quick)]
    with scratch(NAME) as tmp:
        ours = nestling_makespan(e, tmp, "makespan", compare, sleep_s, wait_parquet=not quick)
        base = baseline_makespan(e, tmp, compare, sleep_s)
        big = nestling_makespan(e, tmp, "sweep", sweep, sleep_s) if sweep else None
    rows = [_efficiency(compare, sleep_s, "nestling", ours, quick),
            _efficiency(compare, sleep_s, "submitit map_array", base, quick)]  # fmt: skip
    label = f"{compare} runs x {sleep_s:.0f} s on {GPUS} GPUs"
    rows.append(
        Row(NAME, f"{label}: makespan", ours["makespan_s"], base["makespan_s"], baseline_name="submitit map_array",
            target="ratio <= 1.1", met=judge((ours["makespan_s"] or 0) / (base["makespan_s"] or 1), "<=", 1.1)
            if ours["makespan_s"] and base["makespan_s"] else None, quick=quick)
    )  # fmt: skip
    if big is not None:
        rows.append(_efficiency(sweep, sleep_s, "nestling", big, quick))
    return rows


def _efficiency(n: int, sleep_s: float, who: str, fig: dict[str, Any], quick: bool) -> Row:
    ideal = n * sleep_s / GPUS
    eff = ideal / fig["makespan_s"] if fig["makespan_s"] else None
    starts = f"; {fig['processes']} worker processes for {n} runs" if "processes" in fig else ""
    return Row(
        NAME, f"{n} runs x {sleep_s:.0f} s on {GPUS} GPUs: efficiency, {who}", eff, None, unit="", target=">= 0.9",
        met=judge(eff, ">=", 0.9), quick=quick,
        note=f"{who}: makespan {_s(fig['makespan_s'])} vs ideal {ideal:.0f} s; submit command {fig['submit_s']:.1f} s; "
        f"first result after {_s(fig['first_result_s'])}{starts}"
        + (f"; tune_infos.parquet (collector job) after {_s(fig.get('parquet_s'))}" if "nestling" in who else ""),
    )  # fmt: skip


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    standalone(NAME, run)
