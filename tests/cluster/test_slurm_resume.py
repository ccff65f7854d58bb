"""Issue 21 #1 on the real local SLURM cluster: `--resume` of a SLURM plan resubmits to SLURM with the plan's
resources (it used to train every run in the foreground of the machine where it was typed); an option given on
the resume replaces the plan's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import cli, poll

pytestmark = pytest.mark.cluster

PLAN = ["cv", "--task", "sleep", "--hp", "sleep_s=0.2", "--accelerator", "cpu", "--max_epochs", "1", "--n_seeds",
        "1", "--n_folds", "2", "--strategy", "cv-parallel", "--launcher", "slurm", "--cpus_per_task", "1",
        "--mem_gb", "1", "--time_min", "7"]  # fmt: skip


def queued(ids: list[str]) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30, check=True)
    return {j for j in out.stdout.split() if j.split("_")[0] in ids}


def test_a_resume_runs_where_the_plan_ran(slurm_cluster: str, tmp_path: Path) -> None:
    # Submitted to start in an hour, then cancelled: every run is lost, none trained.
    done = cli(*PLAN, "--slurm_extra", "begin=now+1hour", "--artifact_dir", str(tmp_path), "--name", "away")
    assert done.returncode == 0, done.stdout + done.stderr
    cv = tmp_path / "_cross_validations" / "away"
    first = json.loads((cv / "launch.json").read_text())["launches"][-1]
    ids = [*first["job_ids"], first["collector_job_id"]]
    subprocess.run(["scancel", *ids], timeout=30, check=True)
    poll(lambda: not queued(ids), 60, f"jobs {ids} to leave the queue")

    # No --launcher, no resources: the plan's. --slurm_extra, given now, replaces the plan's begin=now+1hour.
    resumed = cli("cv", "--resume", "away", "--artifact_dir", str(tmp_path), "--slurm_extra", "comment=resumed",
                  "--wait")  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming away: 2 runs on --launcher slurm (--slurm_extra given)" in resumed.stdout
    launch = json.loads((cv / "launch.json").read_text())["launches"][-1]
    assert (launch["launcher"], launch["resume"], launch["launch_overrides"]) == ("slurm", True, ["slurm_extra"])
    arrays = {a["job_id"] for a in launch["arrays"]}
    results = [json.loads(p.read_text()) for p in sorted(cv.glob("*/run_result.json"))]
    assert [r["status"] for r in results] == ["success", "success"]
    assert {r["slurm_job_id"] for r in results} <= arrays and len(arrays) == 1  # trained by the resumed array
    script = "".join(p.read_text() for p in Path(launch["launch_dir"]).glob("*.sbatch"))
    for line in ("#SBATCH --cpus-per-task=1", "#SBATCH --mem=1024MB", "#SBATCH --time=7", "#SBATCH --comment=resumed"):
        assert line in script, script
    assert "--begin" not in script
