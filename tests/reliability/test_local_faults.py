"""Faults on the local launcher: a worker SIGKILLed mid-run, the driver SIGKILLed mid-sweep, resume twice.

Every scenario ends with check_tree: each planned run exactly once in the parquet, all successful, no epoch
trained twice (the epochs of a run's attempts are disjoint and cover 0..max_epochs-1).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from _reliability import (
    FIGURES,
    SLEEP,
    check_tree,
    cli,
    completed_epochs,
    lock_pid,
    ok,
    planned_runs,
    poll,
    result,
    snapshot,
    start,
)

from nestling.core.tree.attempt_lock import alive as lock_alive

LOCAL = [*SLEEP, "--launcher", "local", "--n_folds", "3", "--max_epochs", "3", "--hp", "sleep_s=1.5"]


@pytest.fixture(scope="module")
def killed_worker(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A cv of 3 runs (one worker, one unit); the worker is SIGKILLed after the first run's first epoch."""
    tmp = tmp_path_factory.mktemp("killed-worker")
    art = tmp / "art"
    driver = start("cv", *LOCAL, "--artifact_dir", str(art), "--name", "kw", log=tmp / "driver.log")
    root = art / "_cross_validations" / "kw"
    poll(lambda: (root / "plan.json").is_file(), 60, "the plan")
    victim = next(r["dir"] for r in planned_runs(root) if r["fold"] == 0)
    pid = poll(
        lambda: completed_epochs(victim).get(1) and lock_pid(victim), 120, "the first epoch of the first run"
    )
    os.kill(pid, signal.SIGKILL)
    FIGURES.fault("local worker SIGKILL")
    epochs_before = completed_epochs(victim)[1]
    assert driver.wait(timeout=180) == 0, (tmp / "driver.log").read_text()
    status = json.loads(ok(cli("status", str(root), "--json")).stdout)
    others = [r["dir"] for r in planned_runs(root) if r["dir"] != victim]
    before = {d: ((d / "run_result.json").stat().st_mtime_ns, result(d)) for d in others}
    resumed = cli("cv", "--resume", "kw", "--artifact_dir", str(art))
    return SimpleNamespace(
        art=art, root=root, victim=victim, pid=pid, epochs_before=epochs_before, status=status, others=others,
        before=before, resumed=resumed,
    )  # fmt: skip


def test_sigkilled_worker_loses_one_run_and_resume_continues_it(killed_worker: SimpleNamespace) -> None:
    k = killed_worker
    states = {r["run_name"]: r["state"] for r in k.status["runs"]}
    victim_name = next(r["run_name"] for r in planned_runs(k.root) if r["dir"] == k.victim)
    assert states.pop(victim_name) == "lost"
    assert set(states.values()) == {"success"}  # the other runs of the unit went to a fresh worker
    assert k.status["counts"]["lost"] == 1

    ok(k.resumed)
    assert "1 run in" in k.resumed.stdout  # only the lost run was resubmitted
    runs = check_tree(k.root, max_epochs=3)
    victim = runs[victim_name]
    assert victim["result"]["attempt"] == 2
    assert victim["epochs"][1] == k.epochs_before  # attempt 1's epochs, then attempt 2 resumed after them
    assert victim["epochs"][2] and victim["epochs"][2][0] == k.epochs_before[-1] + 1
    assert not (k.victim / "attempt.lock").exists()
    for d in k.others:  # finished work is never done twice
        mtime, res = k.before[d]
        assert ((d / "run_result.json").stat().st_mtime_ns, result(d)) == (mtime, res)
        assert res["attempt"] == 1
    launches = json.loads((k.root / "launch.json").read_text())["launches"]
    assert [bool(x.get("resume")) for x in launches] == [False, True]
    assert launches[1]["rerun"] == 1


def test_second_resume_has_nothing_to_do_and_changes_nothing(killed_worker: SimpleNamespace) -> None:
    k = killed_worker
    ok(k.resumed)
    before = snapshot(k.root, skip=("run_infos.parquet",))
    table = pl.read_parquet(k.root / "run_infos.parquet")
    again = ok(cli("cv", "--resume", "kw", "--artifact_dir", str(k.art)))
    FIGURES.fault("resume twice")
    assert "nothing to resume" in again.stdout
    assert snapshot(k.root, skip=("run_infos.parquet",)) == before
    assert pl.read_parquet(k.root / "run_infos.parquet").equals(table)
    check_tree(k.root, max_epochs=3, collect=False)


def test_sigkilled_driver_then_resume_finishes_the_sweep(tmp_path: Path) -> None:
    """Kill the local driver while the second run trains: the run in progress ends in its orphaned worker (which
    then exits), nothing else starts; resume trains only what never ran, and not the finished runs again."""
    art = tmp_path / "art"
    driver = start("cv", *LOCAL, "--artifact_dir", str(art), "--name", "kd", log=tmp_path / "driver.log")
    root = art / "_cross_validations" / "kd"
    poll(lambda: (root / "plan.json").is_file(), 60, "the plan")
    first, second, third = (r["dir"] for r in planned_runs(root))
    poll(lambda: result(first) and completed_epochs(second).get(1), 120, "the second run's first epoch")
    driver.kill()  # SIGKILL, the driver only: its worker is orphaned
    driver.wait()
    FIGURES.fault("local driver SIGKILL")
    finished = ((first / "run_result.json").stat().st_mtime_ns, result(first))
    poll(lambda: not any(lock_alive(d) for d in (first, second, third)), 60, "the orphaned worker to end")
    assert not (root / "launch.json").exists()  # the driver died before recording its launch
    assert result(third) is None  # nothing started after the driver died

    second_done = result(second) is not None  # the orphan usually finishes it
    resumed = ok(cli("cv", "--resume", "kd", "--artifact_dir", str(art)))
    assert ("1 run in" if second_done else "2 runs in") in resumed.stdout
    runs = check_tree(root, max_epochs=3)
    assert ((first / "run_result.json").stat().st_mtime_ns, result(first)) == finished
    assert runs[result(first)["run_name"]]["result"]["attempt"] == 1
    assert runs[result(third)["run_name"]]["result"]["attempt"] == 1
