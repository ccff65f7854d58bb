"""Preflight against the cluster: a request compared with recorded sinfo text, before any sbatch (issue 12 #11)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nestling.commands.cli import main
from nestling.core.host import slurm_query
from nestling.launch.slurm.resources import SlurmResources, fit_problem

SINFO = """\
debug*|4|16384|gpu:2|2|infinite|idle|node[1-2]|1-infinite
small|2|6000|(null)|2|1:00:00|idle|s[1-2]|1-1
mixed|64|515000|gpu:a100:4(S:0-1)|2|2-00:00:00|mix|g[01-02]
mixed|128|64000|(null)|8|2-00:00:00|idle|c[01-08]
"""
PARTS = slurm_query.parse_sinfo(SINFO)
BASE = SlurmResources(partition=None, time_min=60, cpus_per_task=2, mem_gb=8, gpus_per_task=0, account=None,
                      qos=None, constraint=None, array_parallelism=8, setup=[], extra={})  # fmt: skip


def problem(**changes: Any) -> str | None:
    return fit_problem(dataclasses.replace(BASE, **changes), PARTS)


def test_fitting_requests_pass() -> None:
    assert problem() is None  # nestling's defaults on the default partition
    assert problem(nodes=2, tasks_per_node=2, cpus_per_task=2, gpus_per_task=2) is None  # 4 CPUs, 2 GPUs per node
    assert problem(partition="small", cpus_per_task=1, mem_gb=5.8) is None  # 5940 MB of 6000
    assert problem(partition="mixed", cpus_per_task=100, mem_gb=60, nodes=8) is None  # the 8 CPU nodes serve
    assert problem(partition="mixed", time_min=2880) is None


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"partition": "nope"}, ["--partition 'nope' does not exist", "partitions: debug, mixed, small"]),
        ({"gpus_per_task": 3}, ["--gpus_per_task 3 exceeds the 2 GPUs per node of partition 'debug'"]),
        ({"nodes": 2, "tasks_per_node": 2, "cpus_per_task": 3},
         ["needs 6 CPUs per node (--cpus_per_task 3 x 2 tasks per node)", "largest node of partition 'debug'",
          "node[1-2]) has 4", "lower --cpus_per_task or --devices"]),
        ({"partition": "small"},
         ["needs 8192 MB of memory per node (--mem_gb 8)", "largest node of partition 'small' (s[1-2]) has 6000 MB",
          "lower --mem_gb to at most 5.8"]),
        ({"partition": "small", "cpus_per_task": 4, "mem_gb": 1},
         ["needs 4 CPUs per node (--cpus_per_task 4)", "has 2", "lower --cpus_per_task"]),
        ({"nodes": 3, "tasks_per_node": 1}, ["--num_nodes 3 exceeds the 2 nodes of partition 'debug'",
                                             "lower --num_nodes"]),
        ({"partition": "small", "cpus_per_task": 1, "mem_gb": 1, "nodes": 2},
         ["--num_nodes 2 exceeds the 1 nodes partition 'small' allows one job (MaxNodes)", "lower --num_nodes"]),
        ({"partition": "small", "cpus_per_task": 1, "mem_gb": 1, "time_min": 90},
         ["--time_min 90 exceeds the 60 min time limit of partition 'small'", "lower --time_min to at most 60"]),
        ({"partition": "mixed", "cpus_per_task": 100, "mem_gb": 100},  # CPUs on one node type, memory on the other
         ["needs 1 node(s) with 100 CPUs, 102400 MB and 0 GPUs", "partition 'mixed' has 0 such nodes"]),
        ({"partition": "mixed", "gpus_per_task": 4, "nodes": 3},
         ["needs 3 node(s) with 2 CPUs, 8192 MB and 4 GPUs", "has 2 such nodes", "lower --num_nodes"]),
    ],
)
def test_requests_no_node_can_serve(changes: dict[str, Any], needles: list[str]) -> None:
    found = problem(**changes)
    assert found is not None
    for needle in needles:
        assert needle in found, found


def test_default_partition_unknown_checks_only_existence() -> None:
    parts = slurm_query.parse_sinfo("gpu|2|1000|(null)|1|infinite|idle|n1\n")  # no default partition
    assert fit_problem(BASE, parts) is None  # sbatch picks the site's default; nothing to compare with


def sinfo_says(monkeypatch: pytest.MonkeyPatch, text: str) -> list[list[str]]:
    calls: list[list[str]] = []

    def ask(argv: list[str], timeout: float, run: Any = None) -> slurm_query.Answer:
        calls.append(argv)
        return slurm_query.Answer(text if argv[0] == "sinfo" else "")

    monkeypatch.setattr(slurm_query, "ask", ask)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"unexpected subprocess {a}"))
    return calls


@pytest.mark.parametrize("dry_run", [False, True])
def test_cli_refuses_before_any_sbatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], dry_run: bool
) -> None:
    """nestling's defaults (--mem_gb 8) on 6000 MB nodes: exit 2, one line, nothing written, nothing submitted."""
    calls = sinfo_says(monkeypatch, SINFO)
    art = tmp_path / "art"
    argv = ["cv", "--task", "sleep", "--accelerator", "cpu", "--n_folds", "2", "--n_seeds", "1",
            "--launcher", "slurm", "--partition", "small", "--artifact_dir", str(art)]  # fmt: skip
    assert main([*argv, *(["--dry_run"] if dry_run else [])]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "lower --mem_gb to at most 5.8" in lines[0], lines
    assert [c[0] for c in calls] == ["sinfo"]  # no sbatch, no scontrol
    assert not art.exists()
