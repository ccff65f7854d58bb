"""Dispatch: plan + submit tunes of 100 / 1,000 / 10,000 runs to the local SLURM cluster, and as --dry_run.

nestling's time is measured in-process (bench/_timed_cli.py): the wall time of `nestling.commands.cli.main(argv)` including
nestling's own imports, excluding the interpreter's start-up, split into phases (plan, write tree, submit). sbatch
calls are counted with a PATH shim that logs each call and then runs the real sbatch; the time inside sbatch (SLURM's
own cost) is reported next to it. Runs use `--strategy cv-parallel` (one array task per run) on the sleep task with
sleep_s=0 and `--slurm_extra begin=now+3600`, so nothing starts while the benchmark runs; every job it submitted is
cancelled right after (collector first). 10,000 runs are not submitted for real: SLURM counts every array task
against MaxJobCount (10,000 by default, as on the local cluster), so the shim answers like sbatch without submitting
(the calls are still counted). Trees go to /var/tmp (see _common.scratch_base).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from bench._common import (
    PYTHON,
    ClusterUnavailable,
    Row,
    cluster_env,
    env,
    job_records,
    judge,
    sbatch_calls,
    sbatch_shim,
    scancel,
    scratch,
    slurm_config,
    standalone,
    timed,
    write_space,
)

NAME = "submit"
RUNS_PER_TRIAL = 10  # 5 folds x 2 seeds


def sizes(quick: bool) -> tuple[list[int], list[int], list[int]]:
    """(dry-run sizes, real-submission sizes, sizes submitted to a stub sbatch)."""
    if quick:
        return [100, 1_000, 10_000], [100, 1_000], []
    return [100, 1_000, 10_000], [100, 1_000], [10_000]


def tune_args(n_runs: int, root: Path, name: str, space: Path) -> list[str]:
    return ["tune", "--task", "sleep", "--hp", "sleep_s=0", "--max_epochs", "1", "--n_folds", "5", "--n_seeds", "2",
            "--n_trials", str(n_runs // RUNS_PER_TRIAL), "--hpconfig", str(space), "--strategy", "cv-parallel",
            "--launcher", "slurm", "--accelerator", "cpu", "--cpus_per_task", "1", "--mem_gb", "1",
            "--slurm_extra", "begin=now+3600", "--artifact_dir", str(root), "--name", name, "--quiet"]  # fmt: skip


def timed_cli(args: list[str], e: dict[str, str], profile: Path | None = None) -> dict[str, Any]:
    cmd = [PYTHON, "-m", "bench._timed_cli", *(["--profile", str(profile)] if profile else []), *args]
    _, out = timed(cmd, env=e)
    return json.loads(out.strip().splitlines()[-1])


def _phases(result: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in result["phases"].items())


def run(quick: bool = False, profile_dir: Path | None = None) -> list[Row]:
    """Plan + submit tunes of 100..10,000 runs (dry run and real, on the local cluster): time and sbatch calls."""
    rows: list[Row] = []
    dry_sizes, real_sizes, stub_sizes = sizes(quick)
    try:
        e = cluster_env()
        limit = slurm_config(e, "MaxArraySize", 1001)
        max_jobs = slurm_config(e, "MaxJobCount", 10_000)
    except ClusterUnavailable as exc:
        e, limit, max_jobs = env(), 1001, 10_000
        stub_sizes = sorted({*real_sizes, *stub_sizes})
        real_sizes = []
        rows.append(
            Row(NAME, "real submission", None, note=f"skipped: {exc}; sbatch stubbed instead", quick=quick)
        )
    with scratch(NAME) as tmp:
        space = write_space(tmp / "space.toml", value={"low": 0.0, "high": 1.0})
        for n in dry_sizes:
            result = timed_cli([*tune_args(n, tmp, f"dry{n}", space), "--dry_run"], e)
            rows.append(
                Row(NAME, f"{n:,} runs, --dry_run", result["total_s"], target="< 2 s" if n == 10_000 else "",
                    met=judge(result["total_s"], "<", 2.0) if n == 10_000 else None, quick=quick,
                    note=f"nestling in-process s: {_phases(result)}")
            )  # fmt: skip
        for n in real_sizes + stub_sizes:
            stub = n not in real_sizes
            if (
                not stub and job_records(e) + n + 1 > max_jobs - 1_000
            ):  # leave room for other users of the cluster
                stub = True
            profile = profile_dir / f"submit-{n}.pstats" if profile_dir else None
            with sbatch_shim(e, stub=stub) as (shim_env, log):
                try:
                    result = timed_cli(tune_args(n, tmp, f"real{n}", space), shim_env, profile)
                finally:
                    if not stub:
                        launch = _last_launch(tmp / f"real{n}")
                        scancel(e, [launch.get("collector_job_id"), *launch.get("job_ids", [])])
                calls = sbatch_calls(log)
            shutil.rmtree(tmp / f"real{n}", ignore_errors=True)
            expected = math.ceil(n / limit) + 1
            in_sbatch = sum(end - start for start, end, _ in calls)
            how = "sbatch stubbed (the cluster's MaxJobCount cannot hold it)" if stub else "submitted"
            rows.append(
                Row(NAME, f"{n:,} runs, {how}", result["total_s"], target="< 2 s" if n == 10_000 else "",
                    met=judge(result["total_s"], "<", 2.0) if n == 10_000 else None, quick=quick,
                    note=f"nestling in-process s: {_phases(result)}; of which inside sbatch {in_sbatch:.2f} s")
            )  # fmt: skip
            rows.append(
                Row(NAME, f"{n:,} runs, sbatch calls", len(calls), expected, unit="calls",
                    baseline_name=f"ceil(N/{limit})+1", target=f"== {expected}", met=len(calls) == expected,
                    quick=quick)
            )  # fmt: skip
    return rows


def _last_launch(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "launch.json").read_text())["launches"][-1]
    except (FileNotFoundError, ValueError, KeyError, IndexError):
        return {}


if __name__ == "__main__":
    standalone(NAME, run)
