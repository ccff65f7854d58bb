"""Faults at scale (issue 23), each injected for real and counted: the runs it hit, the runs that recovered without a
person, and none lost or trained twice (check_tree). The SLURM scenarios run on the real local cluster, submitted
with the rest of the SLURM work when the cluster comes up (tests/slurm_work.py); the file-system ones on tmpfs mounts (root only).

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import slurm_work
from _reliability import FIGURES, SLURM_TASK, check_tree, cli, ok, poll
from slurm_work import Command
from support import require

TASK = ["--task", "nestling.testing.fault_task:FaultTask", "--accelerator", "cpu", "--n_seeds", "1", "--quiet"]
SLURM = [*SLURM_TASK, "--launcher", "slurm", "--strategy", "cv-parallel", "--wait"]


@dataclass(frozen=True)
class Scenario:
    """One SLURM scenario: a cv of the fault task, submitted with the SLURM work when the cluster comes up."""

    args: list[str]  # the cv's options; {base} in a value is the scenario's own dir (fault dirs, stage dirs)
    env: dict[str, str] = field(default_factory=dict)


def _argv(name: str, scenario: Scenario) -> Callable[[Path], list[str]]:
    def argv(art: Path) -> list[str]:
        base = str(art.parent)
        return ["cv", *[a.replace("{base}", base) for a in scenario.args], "--artifact_dir", str(art), "--name", name]

    return argv


def _env(scenario: Scenario) -> Callable[[Path], dict[str, str]]:
    return lambda base: {"NESTLING_RETRY_BACKOFF_S": "1", **{k: v.replace("{base}", str(base))
                                                              for k, v in scenario.env.items()}}  # fmt: skip


two = ["--max_epochs", "2", "--hp", "sleep_s=1"]  # 2 epochs of 1 s: a fault in the second, after a checkpoint
SCENARIOS = {
    "node": Scenario([*TASK, *SLURM, *two, "--n_folds", "4", "--cpus_per_task", "2", "--hp", "fault=ecc",
                      "--hp", "fault_node=first", "--hp", "fault_times=0", "--hp", "fault_dir={base}/faults"]),
    "transient": Scenario([*TASK, *SLURM, *two, "--n_folds", "2", "--hp", "fault=estale",
                           "--hp", "fault_dir={base}/faults"]),
    "oom": Scenario([*TASK[:2], "--accelerator", "auto", *TASK[4:], *SLURM, *two, "--n_folds", "4",
                     "--gpus_per_task", "1", "--runs_per_gpu", "2", "--runs_per_task", "4", "--hp", "fault=oom",
                     "--hp", "fault_shared=true", "--hp", "fault_times=0", "--hp", "fault_dir={base}/faults"]),
    "user": Scenario([*TASK, *SLURM, *two, "--n_folds", "2", "--fail_fast", "0", "--hp", "fault=user",
                      "--hp", "fault_times=0", "--hp", "fault_dir={base}/faults"]),
    "timelimit": Scenario([*TASK, *SLURM, "--max_epochs", "1", "--hp", "sleep_s=20", "--n_folds", "6",
                           "--time_min", "3", "--signal_delay_s", "30", "--array_parallelism", "1"]),
    "staging": Scenario([*TASK, *SLURM, "--max_epochs", "1", "--hp", "sleep_s=1", "--n_folds", "6",
                         "--cpus_per_task", "2", "--stage_dir", "{base}/node-local"],
                        env={"NESTLING_TEST_STAGE_LOG": "{base}/stage.log", "NESTLING_TEST_STAGE_S": "3"}),
}  # fmt: skip
WORK = {name: slurm_work.plan(f"scale-{name}", 1, _argv(name, scenario), lambda art, n=name: art / "_cross_validations" / n,
                              _env(scenario))
        for name, scenario in SCENARIOS.items()}  # fmt: skip


@dataclass
class Ended:
    """A scenario's cv once it ended: its exit code and output, where its tree and its own dir are."""

    handle: Command
    returncode: int
    output: str

    @property
    def root(self) -> Path:
        return self.handle.root

    @property
    def base(self) -> Path:
        return self.handle.art.parent

    def results(self, pattern: str = "run_result*.json") -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob(f"*/{pattern}"))]

    def task_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted((self.root / "_submitit").glob("*log.*")))


@pytest.fixture
def scale(slurm_work: dict[str, Any]) -> Callable[[str, float], Ended]:
    """Wait (at most `timeout` seconds) for the named scenario's cv to end."""

    def ended(name: str, timeout: float) -> Ended:
        handle: Command = slurm_work[WORK[name]]
        done = handle.done(timeout)
        return Ended(handle, done.returncode, done.stdout + done.stderr)

    return ended


def failed_attempts(scenario: Scenario, failure: str) -> list[dict[str, Any]]:
    """The archived (failed) results of attempts that met `failure`."""
    return [r for r in scenario.results("run_result.attempt-*.json") if r.get("failure_class") == failure]


def count(kind: str, injected: int, recovered: int) -> None:
    """Runs a fault of this kind hit, and how many of them ended successful without anyone acting."""
    FIGURES.fault(kind, injected)
    hit, ok_ = FIGURES.classes.get(kind, (0, 0))
    FIGURES.classes[kind] = (hit + injected, ok_ + recovered)


@pytest.mark.cluster
@pytest.mark.slurm_work(WORK["node"])
def test_a_broken_node_is_excluded_and_its_runs_go_on_elsewhere(scale: Callable[[str, float], Ended],
                                                                 slurm_cluster: str) -> None:  # fmt: skip
    s = scale("node", 480)
    assert s.returncode == 0, s.output
    hit = failed_attempts(s, "node")
    broken = (s.base / "faults" / "node").read_text()
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
@pytest.mark.slurm_work(WORK["transient"])
def test_a_transient_io_error_is_retried_after_a_backoff(scale: Callable[[str, float], Ended]) -> None:
    s = scale("transient", 480)
    assert s.returncode == 0, s.output
    hit = failed_attempts(s, "transient_io")
    runs = check_tree(s.root, 2, collect=False)
    assert len(hit) == len(runs) == 2 and all("Stale file handle" in r["error"] for r in hit)
    assert all(r["epochs"] == {1: [0], 2: [1]} for r in runs.values())  # went on from its last checkpoint
    count("transient_io", len(hit), len(runs))


@pytest.mark.cluster
@pytest.mark.slurm_work(WORK["oom"])
def test_out_of_memory_on_a_shared_gpu_reruns_alone(scale: Callable[[str, float], Ended]) -> None:
    s = scale("oom", 600)
    assert s.returncode == 0, s.output
    hit = failed_attempts(s, "oom_shared")
    runs = check_tree(s.root, 2, collect=False)
    assert len(hit) == len(runs) == 4 and "rerunning them alone" in s.task_logs()
    assert all(r["result"]["attempt"] == 2 for r in runs.values())
    count("oom_shared", len(hit), len(runs))


@pytest.mark.cluster
@pytest.mark.slurm_work(WORK["user"])
def test_a_user_error_is_not_retried(scale: Callable[[str, float], Ended]) -> None:
    s = scale("user", 480)
    assert s.returncode == 1, s.output
    results = s.results("run_result.json")
    assert [(r["status"], r["failure_class"], r["attempt"]) for r in results] == [("failed", "user", 1)] * 2
    assert s.results("run_result.attempt-*.json") == []
    count("user: not retried", len(results), 0)
    FIGURES.runs_checked += len(results)  # accounted for: failed on purpose, none lost


@pytest.mark.cluster
@pytest.mark.slurm_work(WORK["timelimit"])
def test_no_take_over_is_cut_by_the_time_limit(scale: Callable[[str, float], Ended]) -> None:
    s = scale("timelimit", 840)  # under the 900-s timeout of a test: this line says what ran
    assert s.returncode == 0, s.output
    runs = check_tree(s.root, 1, collect=False)
    logs = s.task_logs()
    assert all(r["result"]["attempt"] == 1 for r in runs.values())  # no run was interrupted
    assert "timed-out" not in logs and "preempted" not in logs
    left = logs.count("to a fresh task")
    assert left >= 1 and "took over unit" in logs, logs[-3000:]
    count("time limit: take-over that would cross it", left, left)  # each left unit ran whole in a fresh task


@pytest.mark.cluster
@pytest.mark.slurm_work(WORK["staging"])
def test_a_tasks_data_is_staged_once_per_node(scale: Callable[[str, float], Ended]) -> None:
    s = scale("staging", 480)
    assert s.returncode == 0, s.output
    runs = check_tree(s.root, 1, collect=False)
    calls = [line.split() for line in (s.base / "stage.log").read_text().splitlines()]
    hosts = {r["result"]["host"] for r in runs.values()}
    assert sorted(node for node, _, _ in calls) == sorted(hosts)  # exactly one call on each node used
    assert all(Path(dest).parent.name == node for node, _, dest in calls)  # a directory of its own per node
    waited = [r["result"]["stage_s"] for r in runs.values()]
    assert all(isinstance(w, float) for w in waited) and max(waited) >= 3.0  # the stager's own 3 s at least


def _mount_tmpfs(where: Path, options: str) -> None:
    require(os.geteuid() == 0, "root (to mount a tmpfs)", "run the suite as root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    require(done.returncode == 0, f"a tmpfs mount ({done.stderr.strip()})", "run where root may mount file systems")


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
