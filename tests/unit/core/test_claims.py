"""Claims of work units (core/tree/array_claims.py) and the task program's pure parts (array_task.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from nestling.core.host.jobenv import JobEnvironment
from nestling.core.tree import array_claims as claims
from nestling.core.tree.naming import ArrayLaunchPaths
from nestling.execute.array_task import timed_out


def test_a_unit_is_claimed_once_and_a_requeued_task_keeps_its_claim(tmp_path: Path) -> None:
    paths = ArrayLaunchPaths(tmp_path)
    assert claims.claim(paths, 3, "10_3") is True
    assert claims.claim(paths, 3, "10_0") is False  # another task: refused
    assert claims.claim(paths, 3, "10_3") is True  # the same task after a requeue: still its own
    assert claims.claim(paths, 3, "10_3", fresh=True) is False  # but never taken over a second time
    assert claims.holder(paths, 3) == "10_3"
    assert claims.holder(paths, 4) is None
    assert claims.holders(paths) == {3: "10_3"}


def test_concurrent_claims_have_one_winner(tmp_path: Path) -> None:
    paths = ArrayLaunchPaths(tmp_path)
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        barrier.wait()
        if claims.claim(paths, 0, f"7_{i}"):
            wins.append(f"7_{i}")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and claims.holder(paths, 0) == wins[0]


def test_stolen_units_are_remembered_per_task(tmp_path: Path) -> None:
    paths = ArrayLaunchPaths(tmp_path)
    claims.claim(paths, 0, "5_0")
    for unit in (9, 8):
        assert claims.claim(paths, unit, "5_0")
        claims.record_stolen(paths, "5_0", unit)
    assert claims.stolen(paths, "5_0") == [9, 8]
    assert claims.stolen(paths, "5_1") == []
    assert claims.holders(paths) == {0: "5_0", 9: "5_0", 8: "5_0"}  # the ledger file is not a unit


def test_array_offsets_from_jobs_json(tmp_path: Path) -> None:
    paths = ArrayLaunchPaths(tmp_path)
    assert claims.array_offsets(paths) == {}
    paths.jobs.write_text(json.dumps({"arrays": [{"job_id": "40", "offset": 0, "tasks": 4},
                                                 {"job_id": "41", "offset": 4, "tasks": 2}]}))  # fmt: skip
    assert claims.array_offsets(paths) == {"40": 0, "41": 4}


def test_job_key_names_the_array_task() -> None:
    env = {"SLURM_JOB_ID": "57", "SLURM_ARRAY_JOB_ID": "50", "SLURM_ARRAY_TASK_ID": "7"}
    assert JobEnvironment.from_environ(env).job_key == "50_7"
    assert JobEnvironment.from_environ({"SLURM_JOB_ID": "57"}).job_key == "57"


def test_timed_out_uses_submitits_rule() -> None:
    # 60 min limit: guaranteed part min(48 min, 50 min) = 48 min
    assert timed_out(0, 60, now=48 * 60) is True
    assert timed_out(0, 60, now=47 * 60) is False
    # 10 min limit: min(8 min, 0 min) = 0: every signal is a time-out
    assert timed_out(0, 10, now=1) is True


def test_stealer_asks_squeue_once_for_several_units_and_stops_when_nothing_can_be_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = ArrayLaunchPaths(tmp_path)
    asked: list[int] = []
    queue = [(5, "9_5"), (4, "9_4"), (3, "9_3")]

    def fake_waiting(p: ArrayLaunchPaths) -> list[tuple[int, str]]:
        asked.append(1)
        return list(queue)

    monkeypatch.setattr(claims, "waiting_units", fake_waiting)
    monkeypatch.setattr(claims.shutil, "which", lambda name: None)  # no scancel here
    claims.claim(paths, 4, "9_4")  # task 4 started by itself meanwhile
    stealer = claims.Stealer(paths, "9_0")
    assert [stealer.next(), stealer.next()] == [5, 3]
    assert len(asked) == 1  # one squeue call for both
    # the list is used up and squeue still lists the same tasks (being cancelled): ask once more, then stop
    assert stealer.next() is None
    assert len(asked) == 2
    assert claims.stolen(paths, "9_0") == [5, 3]


def test_stealer_asks_again_once_its_list_is_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = ArrayLaunchPaths(tmp_path)
    lists = [[(7, "9_7"), (6, "9_6")], [(6, "9_6")]]
    monkeypatch.setattr(claims, "waiting_units", lambda p: lists.pop(0))
    monkeypatch.setattr(claims.shutil, "which", lambda name: None)
    stealer = claims.Stealer(paths, "9_0", refresh_s=0.0)  # every list is old at once
    assert stealer.next() == 7
    assert stealer.next() == 6  # from the fresh list, not the old one
    assert lists == []
