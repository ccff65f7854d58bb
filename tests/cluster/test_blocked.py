"""A job SLURM can never start, on the real local cluster (2 nodes x 4 CPUs): refused before sbatch when sinfo
answers (issue 12 #11); when it could not (sinfo timed out at submit time), `--wait` stops with exit 1 naming
SLURM's reason and the fix, and `status` shows the run as blocked (issue 12 #3)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import slurm_work
from support import cli

pytestmark = pytest.mark.cluster

# 2 tasks x 3 CPUs = 6 CPUs per node; the fixture's nodes have 4
TOO_BIG = ["run", "--task", "sleep", "--launcher", "slurm", "--num_nodes", "2", "--devices", "2", "--strategy",
           "ddp", "--accelerator", "cpu", "--cpus_per_task", "3", "--mem_gb", "1", "--max_epochs", "1", "--quiet",
           "--wait"]  # fmt: skip


def queued(env: dict[str, str], name: str) -> list[str]:
    """Ids of this test's jobs (by job name) still in the queue."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, env=env, timeout=30,
                         check=True).stdout  # fmt: skip
    return [line.split("|")[0] for line in out.split() if line.split("|")[1].startswith(f"nestling-{name}")]


def test_preflight_refuses_a_job_no_node_can_run(slurm_cluster: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    done = cli(*TOO_BIG, "--artifact_dir", str(tmp_path / "art"), "--name", "toobig", env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "needs 6 CPUs per node (--cpus_per_task 3 x 2 tasks per node)" in lines[0]
    assert "has 4: lower --cpus_per_task or --devices" in lines[0]
    assert not (tmp_path / "art").exists()
    assert queued(env, "toobig") == []


def _sinfo_times_out(base: Path) -> dict[str, str]:
    """A PATH whose sinfo fails as a busy controller's does: the preflight cannot check the request."""
    shim = base / "bin"
    shim.mkdir()
    (shim / "sinfo").write_text("#!/bin/sh\necho 'sinfo: error: Socket timed out on send/recv operation' >&2\nexit 1\n")
    (shim / "sinfo").chmod(0o755)
    return {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}


STUCK = slurm_work.plan("stuck", 6, lambda art: [*TOO_BIG, "--artifact_dir", str(art), "--name", "stuck"],
                        lambda art: art / "_runs", env=_sinfo_times_out)  # fmt: skip


@pytest.mark.slurm_work(STUCK)
def test_wait_stops_on_a_job_slurm_can_never_start(slurm_work: dict[str, Any], slurm_env: dict[str, str]) -> None:
    stuck = slurm_work[STUCK]
    env = slurm_env
    try:
        done = stuck.done(timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "can never start: SLURM keeps it PENDING (PartitionConfig)" in lines[0]
        assert "lower --cpus_per_task, --devices" in lines[0] and "scancel" in lines[0]
        jobs = queued(env, "stuck")
        assert jobs, "the job is left for the user to cancel or fix"
        (run_dir,) = (stuck.art / "_runs").iterdir()
        shown = cli("status", str(run_dir), "--json", env=env, timeout=60)
        assert shown.returncode == 0, shown.stderr
        runs = json.loads(shown.stdout)["runs"]
        assert [(r["state"], r["error"]) for r in runs] == [("blocked", "blocked: PartitionConfig")]
    finally:
        ids = queued(env, "stuck")
        if ids:
            subprocess.run(["scancel", *ids], env=env, timeout=30, check=False)
