"""`--wait` on a job SLURM can never start stops with exit 1, the reason and the fix (issue 12 #3).

squeue/sinfo answers are recorded text (the local cluster with 2 CPUs per node); sbatch is replaced by a function
that hands out job ids, so everything up to the queue is nestling's real code."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nestling.commands.cli import main
from nestling.core.errors import JobsBlocked
from nestling.core.host import slurm_query
from nestling.core.tree.launch_record import LaunchRecord
from nestling.launch.slurm import launcher as slurm
from nestling.launch.slurm.launcher import SlurmArrayLauncher
from nestling.launch.slurm.resources import SlurmResources

SINFO = "debug*|2|16384|gpu:2|2|infinite|idle|node[1-2]\n"
MULTI_NODE = SlurmResources(partition=None, time_min=60, cpus_per_task=2, mem_gb=8, gpus_per_task=0, account=None,
                            qos=None, constraint=None, array_parallelism=8, setup=[], extra={}, nodes=2,
                            tasks_per_node=2)  # fmt: skip


class Slurm:
    """Recorded answers per command; `sinfo_down` makes sinfo fail (as on a login node where it timed out)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, squeue: list[str], sinfo_down: int = 0) -> None:
        self.squeue, self.sinfo_down, self.calls = list(squeue), sinfo_down, []  # type: ignore[var-annotated]
        monkeypatch.setattr(slurm_query, "ask", self.ask)
        monkeypatch.setattr(slurm, "sbatch", self.sbatch)
        monkeypatch.setattr(slurm.time, "sleep", lambda s: None)
        monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"unexpected subprocess {a}"))
        self.next_id = 500

    def ask(self, argv: list[str], timeout: float, run: Any = None) -> slurm_query.Answer:
        self.calls.append(argv[0])
        if argv[0] == "sinfo":
            if self.sinfo_down:
                self.sinfo_down -= 1
                return slurm_query.Answer(None, "Socket timed out")
            return slurm_query.Answer(SINFO)
        if argv[0] == "squeue":
            if self.calls.count("squeue") > 20:
                pytest.fail("wait is still polling a job that can never start")
            return slurm_query.Answer(self.squeue.pop(0) if len(self.squeue) > 1 else self.squeue[0])
        return slurm_query.Answer("")

    def sbatch(self, script: Path) -> str:
        self.next_id += 1
        return str(self.next_id)


class Progress:
    def set_done(self, n: int, done: dict[str, int]) -> None:
        pass


def record(job: str = "501", collector: str = "502") -> LaunchRecord:
    return LaunchRecord.from_dict(
        {"launcher": "slurm", "job_ids": [job], "collector_job_id": collector,
         "arrays": [{"job_id": job, "tasks": 1, "offset": 0, "units": [0], "run_dirs": []}]}
    )  # fmt: skip


def test_wait_stops_on_partition_config_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Slurm(monkeypatch, ["501|PENDING|debug|Priority\n502|PENDING|debug|Dependency\n",
                               "501|PENDING|debug|PartitionConfig\n502|PENDING|debug|Dependency\n"])  # fmt: skip
    with pytest.raises(JobsBlocked) as exc:
        SlurmArrayLauncher(MULTI_NODE, dry_run_folder=Path("/nonexistent")).wait(record(), Progress())
    line = str(exc.value)
    assert "job 501 can never start: SLURM keeps it PENDING (PartitionConfig)" in line
    assert "needs 4 CPUs per node (--cpus_per_task 2 x 2 tasks per node)" in line
    assert "has 2: lower --cpus_per_task or --devices" in line
    assert "scancel 501 502" in line
    assert fake.calls == ["squeue", "squeue", "sinfo"]  # sinfo only once something is blocked


@pytest.mark.parametrize(
    ("reason", "fix"),
    [
        ("PartitionTimeLimit", "lower --time_min"),
        ("PartitionNodeLimit", "lower --num_nodes"),
        ("InvalidAccount", "--account"),
        ("BadConstraints", "--constraint"),
    ],
)
def test_wait_names_a_fix_per_reason(monkeypatch: pytest.MonkeyPatch, reason: str, fix: str) -> None:
    Slurm(monkeypatch, [f"501|PENDING|debug|{reason}\n"])
    fitting = dataclasses.replace(MULTI_NODE, cpus_per_task=1)  # fits the nodes: the partition's limits refuse it
    with pytest.raises(JobsBlocked, match=fix) as exc:
        SlurmArrayLauncher(fitting, dry_run_folder=Path("/nonexistent")).wait(record(), Progress())
    assert f"({reason})" in str(exc.value)


def test_wait_goes_on_while_jobs_can_still_start(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Slurm(monkeypatch, ["501|PENDING|debug|Resources\n", "501|PENDING|debug|ReqNodeNotAvail, x\n",
                               "501|RUNNING|debug|None\n", ""])  # fmt: skip
    SlurmArrayLauncher(MULTI_NODE, dry_run_folder=Path("/nonexistent")).wait(record(), Progress())  # returns: the queue emptied
    assert fake.calls.count("squeue") == 4 and fake.calls.count("sinfo") == 1  # nodes up: ReqNodeNotAvail waits


def test_cli_run_wait_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's command: 2 nodes x 2 tasks x 2 CPUs on 2-CPU nodes, sinfo unreachable at submit time."""
    Slurm(monkeypatch, ["501|PENDING|debug|PartitionConfig\n502|PENDING|debug|Dependency\n"], sinfo_down=1)
    argv = ["run", "--task", "sleep", "--launcher", "slurm", "--num_nodes", "2", "--devices", "2", "--strategy",
            "ddp", "--accelerator", "cpu", "--wait", "--quiet", "--artifact_dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "PartitionConfig" in lines[0] and "lower --cpus_per_task or --devices" in lines[0]
