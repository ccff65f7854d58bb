"""status: run states from a real plan on disk plus a launch record; squeue answers recorded, never a cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from nestling.commands.start import save_launch
from nestling.core.host import slurm_query
from nestling.core.options.config import parse_config
from nestling.core.tree.launch_record import LaunchRecord
from nestling.plan.model import Plan
from nestling.plan.preflight import prepare
from nestling.plan.store import load_plan, write_plan
from nestling.read import run_states as status

CV = ["--task", "sleep", "--accelerator", "cpu", "--n_folds", "2", "--n_seeds", "1", "--name", "st"]


def make_plan(tmp_path: Path, launcher: str, job_id: str = "4242") -> Plan:
    """A 2-run cv on disk and one launch of it (one array, one task per run), nothing finished."""
    config = parse_config([*CV, "--artifact_dir", str(tmp_path)])
    prepared = prepare(config, "cv")
    write_plan(prepared.plan, prepared.splits)
    plan = load_plan(prepared.plan.root)
    dirs = [[str(run.dir)] for run in plan.runs]
    array = {
        "job_id": job_id,
        "tasks": len(dirs),
        "offset": 0,
        "units": list(range(len(dirs))),
        "run_dirs": dirs,
    }
    record: dict[str, Any] = {
        "launcher": launcher,
        "arrays": [array],
        "job_ids": [job_id],
        "collector_job_id": None,
    }
    save_launch(plan.root, LaunchRecord.from_dict(record))
    return plan


def squeue_says(monkeypatch: pytest.MonkeyPatch, text: str | None) -> list[list[str]]:
    """Replace every SLURM call with a recorded squeue answer (None: squeue fails); returns the calls made."""
    calls: list[list[str]] = []

    def ask(argv: list[str], timeout: float, run: Any = None) -> slurm_query.Answer:
        calls.append(argv)
        return slurm_query.Answer(text) if text is not None else slurm_query.Answer(None, "down")

    monkeypatch.setattr(slurm_query, "ask", ask)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"unexpected subprocess {a}"))
    return calls


def test_submitit_local_launch_never_asks_squeue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = make_plan(tmp_path, "submitit-local", job_id="31337")
    calls = squeue_says(monkeypatch, None)
    states = status.run_states(plan)
    assert calls == []  # a local job id means nothing to SLURM
    assert "squeue" not in capsys.readouterr().err
    assert [s.state for s in states] == ["pending", "pending"]  # attached launch still going, no lock yet
    assert [s.job for s in states] == ["31337_0", "31337_1"]


def test_slurm_launch_states_from_squeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = make_plan(tmp_path, "slurm")
    calls = squeue_says(
        monkeypatch,
        "4242_0|RUNNING|debug|None\n4242_1|PENDING|debug|Priority\n77_0|PENDING|debug|Resources\n",
    )
    assert [s.state for s in status.run_states(plan)] == [
        "pending",
        "pending",
    ]  # running without a lock: starting
    assert calls == [["squeue", "-h", "-r", "-o", "%i|%T|%P|%r"]]
    squeue_says(monkeypatch, "")  # left the queue without a result
    assert [s.state for s in status.run_states(plan)] == ["lost", "lost"]
    squeue_says(monkeypatch, None)  # squeue failed: unknown, never lost
    assert [s.state for s in status.run_states(plan)] == ["pending", "pending"]


def test_job_slurm_can_never_start_is_blocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PENDING (PartitionConfig) never ends by waiting: `blocked` with the reason, not `pending` (issue 12 #3)."""
    plan = make_plan(tmp_path, "slurm")
    squeue_says(monkeypatch, "4242_[0-1]|PENDING|debug|PartitionConfig\n")
    states = status.run_states(plan)
    assert [(s.state, s.error) for s in states] == [("blocked", "blocked: PartitionConfig")] * 2
    assert status.count(states) == {
        "success": 0,
        "failed": 0,
        "running": 0,
        "pending": 0,
        "lost": 0,
        "blocked": 2,
        "not started": 0,
        "interrupted": 0,
        "pruned": 0,
        "paused": 0,
    }
    squeue_says(monkeypatch, "4242_0|PENDING|debug|Resources\n4242_1|PENDING|debug|PartitionTimeLimit\n")
    assert [s.state for s in status.run_states(plan)] == ["pending", "blocked"]
