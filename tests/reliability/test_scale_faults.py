"""Faults at scale (issue 23), each injected for real and counted: the runs it hit, the runs that recovered without a
person, and none lost or trained twice (check_tree). The SLURM scenarios run on the real local cluster, started
together when the first of them is asked for; the file-system ones on tmpfs mounts (root only).

  node          a task raises CUDA's ECC error on the node of the first run that starts; the node is excluded and
                the runs go on elsewhere (requeued, same job id)
  transient_io  every run meets ESTALE once, in its second epoch: retried in place from its last checkpoint
  oom_shared    every run runs out of memory while 2 share the (fake) GPU (--runs_per_gpu 2): rerun alone on it
  user          a task error: recorded, never retried (one attempt)
  time limit    runs of 20 s in tasks of --time_min 3: a task takes over a waiting unit only while it fits
  staging       Task.stage is called once per node the runs used (not a fault: issue 23 §4, on the same cluster)
  storage       a colleague fills the file system mid-sweep: one line, exit 1, --resume after freeing space
  preflight     a file system with too few inodes: refused, exit 2, nothing written
The figures print at the end of the session (conftest.py) and are the table of docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _reliability import FIGURES, SLURM_TASK, check_tree, cli, ok, poll, start

TASK = ["--task", "nestling.testing.fault_task:FaultTask", "--accelerator", "cpu", "--n_seeds", "1", "--quiet"]
SLURM = [*SLURM_TASK, "--launcher", "slurm", "--strategy", "cv-parallel", "--wait"]


@dataclass
class Scenario:
    name: str
    art: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.art / "_cross_validations" / self.name

    @property
    def log(self) -> Path:
        return self.art.parent / f"{self.name}.log"

    def start(self) -> None:
        self.art.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NESTLING_RETRY_BACKOFF_S": "1", **self.env}
        self.proc = start("cv", *self.args, "--artifact_dir", str(self.art), "--name", self.name, log=self.log,
                          env=env)  # fmt: skip

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        poll(lambda: self.proc.poll() is not None, timeout, f"the {self.name} scenario to end")  # type: ignore[union-attr]
        return self.proc.returncode

    def results(self, pattern: str = "run_result*.json") -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob(f"*/{pattern}"))]

    def task_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted((self.root / "_submitit").glob("*log.*")))


def scenarios(base: Path) -> dict[str, Scenario]:
    faults = base / "faults"
    two = ["--max_epochs", "2", "--hp", "sleep_s=1"]  # 2 epochs of 1 s: a fault in the second, after a checkpoint
    return {
        "node": Scenario("node", base / "node", [*TASK, *SLURM, *two, "--n_folds", "4", "--cpus_per_task", "2", "--hp", "fault=ecc",
                         "--hp", "fault_node=first", "--hp", "fault_times=0", "--hp", f"fault_dir={faults / 'node'}"]),
        "transient": Scenario("transient", base / "transient", [*TASK, *SLURM, *two, "--n_folds", "2",
                              "--hp", "fault=estale", "--hp", f"fault_dir={faults / 'transient'}"]),
        "oom": Scenario("oom", base / "oom", [*TASK[:2], "--accelerator", "auto", *TASK[4:], *SLURM, *two,
                        "--n_folds", "4", "--gpus_per_task", "1", "--runs_per_gpu", "2", "--runs_per_task", "4",
                        "--hp", "fault=oom", "--hp", "fault_shared=true", "--hp", "fault_times=0",
                        "--hp", f"fault_dir={faults / 'oom'}"]),
        "user": Scenario("user", base / "user", [*TASK, *SLURM, *two, "--n_folds", "2", "--fail_fast", "0",
                         "--hp", "fault=user", "--hp", "fault_times=0", "--hp", f"fault_dir={faults / 'user'}"]),
        "timelimit": Scenario("timelimit", base / "timelimit", [*TASK, *SLURM, "--max_epochs", "1", "--hp",
                              "sleep_s=20", "--n_folds", "6", "--time_min", "3", "--signal_delay_s", "30",
                              "--array_parallelism", "1"]),
        "staging": Scenario("staging", base / "staging", [*TASK, *SLURM, "--max_epochs", "1", "--hp", "sleep_s=1",
                            "--n_folds", "6", "--cpus_per_task", "2", "--stage_dir", str(base / "node-local")],
                            env={"NESTLING_TEST_STAGE_LOG": str(base / "stage.log"), "NESTLING_TEST_STAGE_S": "3"}),
    }  # fmt: skip


@pytest.fixture(scope="module")
def slurm_scale(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Scenario]]:
    """Every SLURM scenario, submitted together (they run side by side on the cluster)."""
    found = scenarios(tmp_path_factory.mktemp("scale"))
    for scenario in found.values():
        scenario.start()
    try:
        yield found
    finally:
        for scenario in found.values():
            if scenario.proc is not None and scenario.proc.poll() is None:
                scenario.proc.kill()
                scenario.proc.wait()
        subprocess.run(["scancel", "--name", *[f"nestling-{n}" for n in found]], capture_output=True, timeout=60)


def failed_attempts(scenario: Scenario, failure: str) -> list[dict[str, Any]]:
    """The archived (failed) results of attempts that met `failure`."""
    return [r for r in scenario.results("run_result.attempt-*.json") if r.get("failure_class") == failure]


def count(kind: str, injected: int, recovered: int) -> None:
    """Runs a fault of this kind hit, and how many of them ended successful without anyone acting."""
    FIGURES.fault(kind, injected)
    hit, ok_ = FIGURES.classes.get(kind, (0, 0))
    FIGURES.classes[kind] = (hit + injected, ok_ + recovered)


@pytest.mark.cluster
def test_a_broken_node_is_excluded_and_its_runs_go_on_elsewhere(slurm_scale: dict[str, Scenario]) -> None:
    s = slurm_scale["node"]
    assert s.wait(480) == 0, s.log.read_text()
    hit = failed_attempts(s, "node")
    broken = (s.art.parent / "faults" / "node" / "node").read_text()
    assert hit and {r["host"] for r in hit} == {broken}
    runs = check_tree(s.root, 2, collect=False)
    final = [r["result"] for r in runs.values()]
    assert all(r["host"] != broken for r in final)  # every run ended elsewhere
    assert {r["attempt"] for r in final if r["run_id"] in {h["run_id"] for h in hit}} == {2}
    assert f"node {broken} is broken" in s.task_logs()
    listed = json.loads(ok(cli("status", str(s.root), "--json")).stdout)["excluded_nodes"]
    assert [n["node"] for n in listed] == [broken] and "uncorrectable ECC error" in listed[0]["error"]
    count("node", len(hit), sum(1 for r in final if r["run_id"] in {h["run_id"] for h in hit}))


@pytest.mark.cluster
def test_a_transient_io_error_is_retried_after_a_backoff(slurm_scale: dict[str, Scenario]) -> None:
    s = slurm_scale["transient"]
    assert s.wait(480) == 0, s.log.read_text()
    hit = failed_attempts(s, "transient_io")
    runs = check_tree(s.root, 2, collect=False)
    assert len(hit) == len(runs) == 2 and all("Stale file handle" in r["error"] for r in hit)
    assert all(r["epochs"] == {1: [0], 2: [1]} for r in runs.values())  # went on from its last checkpoint
    count("transient_io", len(hit), len(runs))


@pytest.mark.cluster
def test_out_of_memory_on_a_shared_gpu_reruns_alone(slurm_scale: dict[str, Scenario]) -> None:
    s = slurm_scale["oom"]
    assert s.wait(600) == 0, s.log.read_text()
    hit = failed_attempts(s, "oom_shared")
    runs = check_tree(s.root, 2, collect=False)
    assert len(hit) == len(runs) == 4 and "rerunning them alone" in s.task_logs()
    assert all(r["result"]["attempt"] == 2 for r in runs.values())
    count("oom_shared", len(hit), len(runs))


@pytest.mark.cluster
def test_a_user_error_is_not_retried(slurm_scale: dict[str, Scenario]) -> None:
    s = slurm_scale["user"]
    assert s.wait(480) == 1, s.log.read_text()
    results = s.results("run_result.json")
    assert [(r["status"], r["failure_class"], r["attempt"]) for r in results] == [("failed", "user", 1)] * 2
    assert s.results("run_result.attempt-*.json") == []
    count("user: not retried", len(results), 0)
    FIGURES.runs_checked += len(results)  # accounted for: failed on purpose, none lost


@pytest.mark.cluster
def test_no_take_over_is_cut_by_the_time_limit(slurm_scale: dict[str, Scenario]) -> None:
    s = slurm_scale["timelimit"]
    assert s.wait(900) == 0, s.log.read_text()
    runs = check_tree(s.root, 1, collect=False)
    logs = s.task_logs()
    assert all(r["result"]["attempt"] == 1 for r in runs.values())  # no run was interrupted
    assert "timed-out" not in logs and "preempted" not in logs
    left = logs.count("to a fresh task")
    assert left >= 1 and "took over unit" in logs, logs[-3000:]
    count("time limit: take-over that would cross it", left, left)  # each left unit ran whole in a fresh task


@pytest.mark.cluster
def test_a_tasks_data_is_staged_once_per_node(slurm_scale: dict[str, Scenario]) -> None:
    s = slurm_scale["staging"]
    assert s.wait(480) == 0, s.log.read_text()
    runs = check_tree(s.root, 1, collect=False)
    calls = [line.split() for line in (s.art.parent / "stage.log").read_text().splitlines()]
    hosts = {r["result"]["host"] for r in runs.values()}
    assert sorted(node for node, _, _ in calls) == sorted(hosts)  # exactly one call on each node used
    assert all(Path(dest).parent.name == node for node, _, dest in calls)  # a directory of its own per node
    waited = [r["result"]["stage_s"] for r in runs.values()]
    assert all(isinstance(w, float) for w in waited) and max(waited) >= 3.0  # the stager's own 3 s at least


def _mount_tmpfs(where: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, unmounted afterwards."""
    where = tmp_path / "fs"
    _mount_tmpfs(where, "size=4m")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_file_system_that_fills_up_mid_sweep_stops_it_with_one_line(small_fs: Path, tmp_path: Path) -> None:
    args = ["--task", "sleep", "--accelerator", "cpu", "--n_seeds", "2", "--n_folds", "4", "--max_epochs", "1",
            "--hp", "sleep_s=0.5", "--quiet", "--artifact_dir", str(small_fs / "art"), "--name", "fill"]  # fmt: skip
    log = tmp_path / "fill.log"
    with open(log, "w") as out, open(tmp_path / "fill.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nestling.cli", "cv", *args], stdout=out, stderr=err)
    root = small_fs / "art" / "_cross_validations" / "fill"
    poll(lambda: len(list(root.glob("*/run_result.json"))) >= 2 or proc.poll() is not None, 240, "two results")
    filler = small_fs / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until ENOSPC
    assert proc.wait(timeout=300) == 1
    (line,) = (tmp_path / "fill.err").read_text().strip().splitlines()
    assert line.startswith("nestling: cv fill: the file system is full (") and "--resume fill" in line
    assert "Traceback" not in log.read_text()
    stopped = len(list(root.glob("*/run_result.json")))
    filler.unlink()
    ok(cli("cv", "--resume", "fill", "--artifact_dir", str(small_fs / "art"), "--quiet", timeout=300))
    runs = check_tree(root, 1)
    count("storage: full mid-sweep (a person frees space, --resume)", len(runs) - stopped, 0)


def test_a_plan_the_file_system_cannot_hold_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    where = tmp_path / "few-inodes"
    _mount_tmpfs(where, "size=64m,nr_inodes=200")
    try:
        done = cli("cv", "--task", "sleep", "--n_folds", "5", "--n_seeds", "4", "--artifact_dir", str(where / "art"))
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("nestling: error: the plan needs about ") and "inodes free" in line
        assert list(where.iterdir()) == []
        FIGURES.fault("storage: too few inodes for the plan (refused at preflight, exit 2)")
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
