"""Claims of work units (launch/claims.py) and the task program's pure parts (launch/task.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from nestling.launch import claims
from nestling.launch.task import job_key, timed_out
from nestling.naming import ArrayLaunchPaths


def test_a_unit_is_claimed_once_and_a_requeued_task_keeps_its_claim(tmp_path: Path) -> None:
    paths = ArrayLaunchPaths(tmp_path)
    assert claims.claim(paths, 3, "10_3") is True
    assert claims.claim(paths, 3, "10_0") is False  # another task: refused
    assert claims.claim(paths, 3, "10_3") is True  # the same task after a requeue: still its own
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
    assert job_key({"SLURM_JOB_ID": "57", "SLURM_ARRAY_JOB_ID": "50", "SLURM_ARRAY_TASK_ID": "7"}) == "50_7"
    assert job_key({"SLURM_JOB_ID": "57"}) == "57"


def test_timed_out_uses_submitits_rule() -> None:
    # 60 min limit: guaranteed part min(48 min, 50 min) = 48 min
    assert timed_out(0, 60, now=48 * 60) is True
    assert timed_out(0, 60, now=47 * 60) is False
    # 10 min limit: min(8 min, 0 min) = 0: every signal is a time-out
    assert timed_out(0, 10, now=1) is True
