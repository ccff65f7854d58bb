"""--detach (issue 14 §4): a local sweep that outlives its terminal, `nestling stop`, and `--resume` after it.

Everything goes through the real command line in fresh processes; the sleep task makes run durations predictable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nestling.core.tree import naming
from nestling.core.tree import supervisor_pid as supervision
from nestling.core.tree.atomic import read_json
from nestling.core.tree.run_result import RunResult, read_result
from nestling.plan.store import load_plan
from tests.support import cli, poll

pytestmark = pytest.mark.e2e

SLEEP = ["--task", "sleep", "--n_seeds", "1", "--accelerator", "cpu"]


def _env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline"}


def _results(root: Path) -> dict[str, RunResult | None]:
    return {run.run_name: read_result(run.dir) for run in load_plan(root).runs}


def _done(root: Path) -> bool:
    """Every run has a result and the supervisor has ended (it collects after the last run)."""
    results = _results(root)
    return all(r is not None for r in results.values()) and supervision.read_supervisor(root) is None


def test_a_detached_sweep_outlives_the_shell_that_started_it(tmp_path: Path) -> None:
    """Start `nestling cv --detach` from a shell in its own session (a terminal), hang up and kill that session:
    the sweep completes under its supervisor, and status, launch.json and the tables say so."""
    art = tmp_path / "art"
    args = ["cv", *SLEEP, "--n_folds", "3", "--max_epochs", "1", "--hp", "sleep_s=1", "--name", "away",
            "--artifact_dir", str(art), "--detach"]  # fmt: skip
    command = " ".join([sys.executable, "-m", "nestling.cli", *args])
    shell = subprocess.Popen(
        ["bash", "-c", f"{command} > {tmp_path / 'fg.out'} 2>&1; echo $? > {tmp_path / 'fg.rc'}; sleep 600"],
        start_new_session=True,
        env=_env(),
    )
    root = naming.cv_dir(art, "away")
    try:
        poll(lambda: (tmp_path / "fg.rc").exists(), 60, "the foreground command to return")
        assert (tmp_path / "fg.rc").read_text().strip() == "0", (tmp_path / "fg.out").read_text()
        sup = supervision.live_supervisor(root)
        assert sup is not None and sup.pid != shell.pid
        assert os.getsid(sup.pid) == sup.pid  # its own session: the terminal's hang-up never reaches it
        out = (tmp_path / "fg.out").read_text()
        assert f"nestling stop {root}" in out and "detached: supervisor pid" in out
    finally:
        os.killpg(shell.pid, signal.SIGHUP)  # the terminal closes ...
        os.killpg(shell.pid, signal.SIGKILL)  # ... and whatever was left of its session is killed
        shell.wait()
    status = cli("status", str(root), "--json", env=_env())
    assert status.returncode == 0, status.stderr
    if not _done(root):  # still running: status names the supervisor
        assert json.loads(status.stdout)["supervisor"]["pid"] == sup.pid
    poll(lambda: _done(root), 180, "the detached sweep to complete")
    assert {r.status for r in _results(root).values() if r} == {"success"}
    assert len(_results(root)) == 3
    launches = read_json(naming.launch_file(root))["launches"]
    assert launches[-1]["detached"] is True and launches[-1]["finished_at"]
    assert (root / naming.RUN_INFOS).is_file()
    log = naming.SupervisorPaths(root).log.read_text()
    assert "supervisor ended: exit code 0" in log
    assert not naming.SupervisorPaths(root).request.exists()
    final = cli("status", str(root), "--json", env=_env())
    assert json.loads(final.stdout)["counts"]["success"] == 3 and json.loads(final.stdout)["supervisor"] is None


def test_stop_then_resume_loses_nothing(tmp_path: Path) -> None:
    """`nestling stop` mid-sweep: finished runs stay finished, the one in progress saves, a second launch is
    refused while the supervisor lives; `--resume` then completes every run, training none of the finished again."""
    art = tmp_path / "art"
    common = ["--artifact_dir", str(art)]
    started = cli("cv", *SLEEP, "--n_folds", "4", "--max_epochs", "3", "--hp", "sleep_s=1", "--name", "halt",
                  *common, "--detach", env=_env())  # fmt: skip
    assert started.returncode == 0, started.stderr
    root = naming.cv_dir(art, "halt")
    poll(lambda: any(_results(root).values()), 120, "a first run to finish")
    again = cli("cv", "--resume", "halt", *common, "--detach", env=_env())
    assert again.returncode == 2 and "detached supervisor" in again.stderr and "nestling stop" in again.stderr
    stopped = cli("stop", str(root), env=_env())
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"nestling cv --resume halt --artifact_dir {art}" in stopped.stdout
    assert supervision.live_supervisor(root) is None
    before = {name: r for name, r in _results(root).items() if r is not None}
    assert before and all(r.status == "success" for r in before.values())
    assert len(before) < 4, "stopped too late to test anything; make the runs longer"
    kept = {run.run_name: run.dir for run in load_plan(root).runs}
    result_text = {name: naming.RunPaths(kept[name]).result.read_text() for name in before}

    resumed = cli("cv", "--resume", "halt", *common, env=_env())
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = _results(root)
    assert all(r is not None and r.status == "success" for r in after.values())
    for name in before:  # finished before the stop: untouched, trained once
        assert naming.RunPaths(kept[name]).result.read_text() == result_text[name]
        assert read_json(naming.RunPaths(kept[name]).attempts) == 1
    for name, r in after.items():
        assert r is not None and r.attempt <= 2, f"{name} trained {r.attempt} times"
        assert not list(kept[name].glob("run_result.attempt-*.json")), f"{name} failed once"
    launches = read_json(naming.launch_file(root))["launches"]
    assert launches[0]["detached"] is True and launches[0]["interrupted"] is True
    assert launches[-1].get("resume") is True and launches[-1]["rerun"] == 4 - len(before)


def test_detach_is_refused_off_the_local_launcher_and_stop_without_a_supervisor(tmp_path: Path) -> None:
    art = tmp_path / "art"
    slurm = cli("cv", *SLEEP, "--launcher", "slurm", "--detach", "--artifact_dir", str(art), env=_env())
    assert slurm.returncode == 2
    assert slurm.stderr.strip().splitlines() == [
        "nestling: error: --detach is for --launcher local; --launcher slurm returns once the jobs are submitted "
        "already (drop --detach)"
    ]
    assert not art.exists()  # nothing written
    done = cli("cv", *SLEEP, "--n_folds", "2", "--max_epochs", "1", "--hp", "sleep_s=0", "--name", "here",
               "--artifact_dir", str(art), "--quiet", env=_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    stop = cli("stop", str(naming.cv_dir(art, "here")), env=_env())
    # stopping what does not run is not an error (a script may stop twice): it says so and exits 0
    assert stop.returncode == 0 and "nothing to stop: no detached supervisor runs cv 'here'" in stop.stdout


def test_sigterm_to_the_supervisor_stops_it_as_stop_does(tmp_path: Path) -> None:
    """A shutdown or a plain `kill PID` (SIGTERM) takes the same graceful path as `nestling stop`."""
    art = tmp_path / "art"
    started = cli("cv", *SLEEP, "--n_folds", "3", "--max_epochs", "4", "--hp", "sleep_s=1", "--name", "term",
                  "--artifact_dir", str(art), "--detach", env=_env())  # fmt: skip
    assert started.returncode == 0, started.stderr
    root = naming.cv_dir(art, "term")
    runs = load_plan(root).runs
    poll(lambda: any(naming.RunPaths(r.dir).attempts.exists() for r in runs), 120, "a run to start")
    sup = supervision.live_supervisor(root)
    assert sup is not None
    os.kill(sup.pid, signal.SIGTERM)
    poll(lambda: supervision.read_supervisor(root) is None, 120, "the supervisor to end")
    launches = read_json(naming.launch_file(root))["launches"]
    assert launches[-1]["interrupted"] is True and launches[-1]["detached"] is True
    assert "supervisor ended: exit code 130" in naming.SupervisorPaths(root).log.read_text()
    assert any(read_result(r.dir) is None for r in runs)  # it stopped before the end
