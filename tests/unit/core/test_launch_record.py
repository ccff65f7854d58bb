"""The typed launch record: launch.json entries keep the exact JSON shape of each launcher through a round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestling.core.tree.launch_record import ArrayRecord, LaunchRecord, append_launch, read_launches

LOCAL = {"launcher": "local", "started_at": 1.0, "units": 3, "workers": 2, "lost_units": [1],
         "lost_runs": ["/a/r1"], "finished_at": 2.0, "saved_at": 2.5}  # fmt: skip
SLURM_PARTIAL = {
    "launcher": "slurm", "submitit_folder": "/p/_submitit", "launch_dir": "/p/_submitit/launch-x",
    "max_array_size": 2, "arrays": [{"job_id": "7", "tasks": 2, "offset": 0, "units": [0, 1],
                                     "run_dirs": [["/p/r0"], ["/p/r1"]]}],
    "job_ids": ["7"], "collector_job_id": None, "submitted_at": 3.0, "submit_error": "sbatch array-1.sbatch failed",
    "resume": True, "rerun": 2, "forced_changes": [], "saved_at": 4.0,
}  # fmt: skip


@pytest.mark.parametrize("entry_", [LOCAL, SLURM_PARTIAL], ids=["local", "slurm"])
def test_round_trip_keeps_keys_values_and_order(entry_: dict) -> None:
    record = LaunchRecord.from_dict(entry_)
    assert json.dumps(record.to_dict()) == json.dumps(entry_)


def test_typed_fields_and_unknown_keys() -> None:
    record = LaunchRecord.from_dict({**SLURM_PARTIAL, "from_a_newer_version": {"x": 1}})
    assert record.arrays == [ArrayRecord("7", 2, 0, [0, 1], [["/p/r0"], ["/p/r1"]])]
    assert record.run_dirs == ["/p/r0", "/p/r1"] and record.submitted
    assert record.to_dict()["from_a_newer_version"] == {"x": 1}
    assert "collector_job_id" not in LaunchRecord("local").to_dict()  # only queue launches carry it
    assert LaunchRecord("local").updated({"resume": True, "note": "n"}).to_dict() == {
        "launcher": "local", "resume": True, "note": "n"
    }


def test_append_keeps_history_as_written(tmp_path: Path) -> None:
    old = '{"launches": [{"launcher": "local", "weird": [1, 2], "saved_at": 1}]}\n'
    (tmp_path / "launch.json").write_text(old)
    append_launch(tmp_path, LaunchRecord("slurm", job_ids=["9"], arrays=[]), now=5.0)
    launches = json.loads((tmp_path / "launch.json").read_text())["launches"]
    assert launches[0] == {"launcher": "local", "weird": [1, 2], "saved_at": 1}
    assert launches[1] == {"launcher": "slurm", "arrays": [], "job_ids": ["9"], "collector_job_id": None,
                           "saved_at": 5.0}  # fmt: skip
    assert [r.launcher for r in read_launches(tmp_path)] == ["local", "slurm"]
    assert read_launches(tmp_path / "nope") == []
