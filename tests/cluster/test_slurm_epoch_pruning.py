"""Pruning between epochs on SLURM arrays (issue 22): a paused run is work any array task can take, and a task
preempted (USR2, requeue) while it trains a promoted run leaves nothing trained twice.

Runs on the local SLURM cluster (tests/cluster's fixtures); the lead runs it after the merge.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from support import cli, poll

from nestling.core.tree import naming
from nestling.testing.counting_task import counted_epochs

pytestmark = pytest.mark.cluster

SPACE = """
[hyperparameters]
lr = {distribution = "loguniform", low = 1e-4, high = 0.1}
width = {low = 0.0, high = 0.6}
"""


def _runs(root: Path) -> list[Path]:
    plan = json.loads((root / naming.PLAN).read_text())
    return [root / r["dir"] for cv in plan["cvs"] for r in cv["runs"]]


def _result(run: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run / naming.RUN_RESULT).read_text())


def _promoted_in_training(root: Path) -> tuple[Path, str] | None:
    """A promoted run an epoch past its pause, and the SLURM job whose task trains it."""
    for run in _runs(root) if (root / naming.PLAN).exists() else []:
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            paused = _result(run)
            lock = json.loads((run / naming.RUN_LOCK).read_text())
            if paused["stop_reason"] == "paused" and len(counted_epochs(run).get(0, [])) > paused["epochs_trained"]:
                return run, str(lock["slurm_job_id"])
    return None


def _what_ran(root: Path) -> list[tuple[str, object, object, int]]:
    """Each run's stop reason, epochs trained and epochs counted: what a failure message needs."""
    out = []
    for run in _runs(root):
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            result = _result(run)
            out.append((run.name, result.get("stop_reason"), result.get("epochs_trained"),
                        len(counted_epochs(run).get(0, []))))  # fmt: skip
    return out


def test_array_tasks_take_promotions_and_a_preempted_promotion_trains_no_epoch_twice(
    slurm_cluster: str, tmp_path: Path
) -> None:
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    art = tmp_path / "art"
    done = cli("tune", "--task", "nestling.testing.counting_task:CountingBowlTask", "--hpconfig", str(space),
               "--pruner", "asha", "--n_trials", "6", "--fold_method", "none", "--n_seeds", "1", "--max_epochs", "9",
               "--hp", "sleep_s=2", "--tune_seed", "3", "--accelerator", "cpu", "--cpus_per_task", "1", "--mem_gb",
               "1", "--strategy", "tune-parallel", "--launcher", "slurm", "--array_parallelism", "2",
               "--artifact_dir", str(art), "--name", "sa", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    root = art / "sa"
    signalled: dict[str, str] = {}

    def preempt_once() -> None:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and not signalled:
            found = _promoted_in_training(root)
            if found is not None:
                run, job = found
                # the task may end between the look and the signal (scancel then exits non-zero): nothing signalled
                sent = subprocess.run(["scancel", "--signal=USR2", job], capture_output=True, timeout=180, check=False)
                if sent.returncode == 0:
                    signalled.update(run=str(run), job=job)
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=preempt_once, daemon=True)
    watcher.start()
    poll(lambda: (root / naming.TUNE_INFOS).is_file(), 600, "tune_infos.parquet from the collector job")
    watcher.join(timeout=5)
    # A promotion from a pause needs the two array tasks to run at once: one pauses a trial, the other's later
    # trial promotes it. On a cluster busy with the suite's other SLURM work the tasks may run one after the other,
    # and then every trial is decided at its arrival (none paused and promoted). The invariants below hold either
    # way; the preemption of a promotion is checked whenever one happened (and in tests/e2e/test_epoch_pruning.py).
    ran = _what_ran(root)
    table = pl.read_parquet(root / naming.TUNE_INFOS)
    assert table.height == 6 and set(table["state"].to_list()) <= {"complete", "pruned"}, table["state"].to_list()
    assert "complete" in table["state"].to_list()
    for run in _runs(root):  # every epoch once, counted by the task, across pauses, promotions and the requeue
        assert counted_epochs(run).get(0) == list(range(_result(run)["epochs_trained"])), run.name
    if signalled:
        victim = Path(signalled["run"])
        assert _result(victim)["attempt"] == 2 and _result(victim)["stop_reason"] in ("completed", "paused")
    else:
        assert all(reason in ("completed", "paused") for _, reason, _, _ in ran), ran
    counts = json.loads(cli("status", str(root), "--json").stdout)["counts"]
    assert counts["success"] + counts["pruned"] == 6 and counts["paused"] == 0 and counts["lost"] == 0
