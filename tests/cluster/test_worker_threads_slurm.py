"""Issue 21 #2 and #3 on the real local SLURM cluster: an array task's torch threads and `*_NUM_THREADS` follow
`--cpus_per_task` (the issue saw 2 threads in a 1-CPU task), and the tree it writes has the modes of the submitting
user's umask. The local launchers: tests/e2e/test_worker_threads_local.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nestling.core.host import worker_limits

pytestmark = pytest.mark.cluster

TESTS = Path(__file__).resolve().parents[1]  # probe_task.py


def test_array_tasks_use_the_cpus_they_were_given_and_the_submitter_s_umask(
    slurm_cluster: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in worker_limits.THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    previous = os.umask(0o027)  # the user's shell; sbatch hands it to the job
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nestling.cli", "cv", "--task", "probe_task:ProbeTask", "--hp", "sleep_s=0",
             "--max_epochs", "1", "--n_seeds", "1", "--n_folds", "2", "--accelerator", "cpu", "--strategy",
             "cv-parallel", "--launcher", "slurm", "--cpus_per_task", "1", "--mem_gb", "1", "--artifact_dir",
             str(tmp_path), "--name", "limits", "--quiet", "--wait"],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )  # fmt: skip
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stdout + done.stderr
    cv = tmp_path / "_cross_validations" / "limits"
    seen = [json.loads(p.read_text()) for p in sorted(cv.glob("*/probe.json"))]
    assert len(seen) == 2
    for probe in seen:
        assert probe["SLURM_CPUS_PER_TASK"] == "1"
        assert probe["threads"] == 1  # torch's default here is the machine's 2 cores
        assert (probe["OMP_NUM_THREADS"], probe["MKL_NUM_THREADS"], probe["OPENBLAS_NUM_THREADS"]) == ("1", "1", "1")
        assert probe["umask"] == 0o027
    results = [json.loads(p.read_text()) for p in cv.glob("*/run_result.json")]
    assert [bool(r["slurm_job_id"]) for r in results] == [True, True]
    tree = [p for p in cv.rglob("*") if p.name != "probe.json"]
    def expected(p: Path) -> tuple[int, ...]:  # the code snapshot's files are read-only (issue 24)
        if p.is_dir():
            return (0o750,)
        return (0o440, 0o550) if p.relative_to(cv).parts[0] == "_code" and p.suffix != ".json" else (0o640,)

    wrong = {str(p.relative_to(cv)): oct(stat.S_IMODE(p.stat().st_mode)) for p in tree
             if stat.S_IMODE(p.stat().st_mode) not in expected(p)}  # fmt: skip
    assert wrong == {}
    assert {"plan.json", "launch.json", "run_infos.parquet"} <= {p.name for p in tree}
