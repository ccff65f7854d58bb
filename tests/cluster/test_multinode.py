"""Multi-node DDP for one run on the real local cluster: 2 nodes x 2 processes, CPU (gloo), through srun."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import slurm_work

pytestmark = pytest.mark.cluster


MN = slurm_work.plan(
    "mn", 7,
    lambda art: ["run", "--launcher", "slurm", "--num_nodes", "2", "--devices", "2", "--accelerator", "cpu",
                 "--strategy", "ddp", "--cpus_per_task", "1", "--mem_gb", "1", "--max_epochs", "1",
                 "--artifact_dir", str(art), "--name", "mn", "--wait", "--quiet"],
    lambda art: art / "_runs",
)  # fmt: skip


@pytest.mark.slurm_work(MN)
def test_two_nodes_two_processes_ddp(slurm_work: dict[str, Any]) -> None:
    mn = slurm_work[MN]
    done = mn.done(timeout=600)  # it needs 2 CPUs on both nodes at once: behind the suite's arrays on a busy cluster
    assert done.returncode == 0, done.stderr[-3000:]
    art = mn.art
    (run_dir,) = (art / "_runs").iterdir()
    result = json.loads((run_dir / "run_result.json").read_text())
    assert result["status"] == "success", result["error"]
    assert result["world_size"] == 4
    assert result["slurm_array_task_id"] is None  # one job, not an array

    launch = json.loads((run_dir / "launch.json").read_text())["launches"][-1]
    folder = Path(launch["submitit_folder"])
    job = launch["job_ids"][0]
    ranks: dict[int, str] = {}
    rank_metrics: dict[int, dict[str, float]] = {}
    for log in folder.glob(f"{job}_*_log.err"):
        text = log.read_text()
        for rank, node in re.findall(r"rank (\d+) of 4 on (node\d)", text):
            ranks[int(rank)] = node
        for rank, metrics in re.findall(r"rank (\d+) metrics (\{.*\})", text):
            rank_metrics[int(rank)] = json.loads(metrics)
    assert sorted(ranks) == [0, 1, 2, 3]
    assert {ranks[0], ranks[1]} == {"node1"} and {ranks[2], ranks[3]} == {"node2"}
    assert rank_metrics[0] == result["metrics"]
    # only rank 0 writes: one result, one checkpoint dir, no stray per-rank files
    assert sorted(p.name for p in run_dir.glob("run_result*.json")) == ["run_result.json"]
    assert result["host"] == "node1"


def test_dry_run_script_for_two_nodes(tmp_path: Path, slurm_cluster: str) -> None:
    cmd = [
        sys.executable, "-m", "nestling.cli", "run", "--launcher", "slurm", "--num_nodes", "2", "--devices", "2",
        "--accelerator", "gpu", "--strategy", "ddp", "--artifact_dir", str(tmp_path), "--name", "dry", "--dry_run",
    ]  # fmt: skip
    done = subprocess.run(
        cmd, env={**os.environ, "SLURM_CONF": slurm_cluster}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --gres=gpu:2", "srun "):
        assert line in done.stdout
    assert "--array" not in done.stdout
    assert not (tmp_path / "_runs").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--num_nodes", "2", "--devices", "2"], "--launcher slurm"),
        (["--launcher", "slurm", "--num_nodes", "2", "--devices", "0", "1"], "list of ids"),
        (
            ["--launcher", "slurm", "--num_nodes", "2", "--devices", "2", "--strategy", "single_device"],
            "DDP-like",
        ),
        (["--launcher", "slurm", "--num_nodes", "2"], "device count"),
    ],
)
def test_multinode_preflight_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    cmd = [sys.executable, "-m", "nestling.cli", "run", "--artifact_dir", str(tmp_path / "a"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert not (tmp_path / "a").exists()


def test_parallel_strategy_refuses_several_nodes(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "nestling.cli", "cv", "--strategy", "cv-parallel", "--num_nodes", "2",
        "--launcher", "slurm", "--devices", "2", "--artifact_dir", str(tmp_path / "a"),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "do not use DDP" in done.stderr
