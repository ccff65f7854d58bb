"""plan/capacity.py and core/host/storage.py: a plan's files and bytes projected against the file system's free
inodes and space and the user's quota, refused (exit 2) when it cannot fit and warned about at 80 %."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from nestling.core.errors import UsageError
from nestling.core.host.storage import Quota, Room, parse_quota, room
from nestling.core.options.config import parse_config
from nestling.plan import capacity
from nestling.plan.capacity import RunSize, check, project
from nestling.plan.preflight import prepare
from nestling.plan.settings import checkpoints_to_keep

KIB, MIB = 1024, 1024**2


def tune_plan(tmp_path: Path, trials: int = 10) -> Any:
    hp = tmp_path / "space.toml"
    hp.write_text('[hyperparameters]\nlr = {distribution = "loguniform", low = 0.001, high = 0.1}\n')
    args = ["--task", "sleep", "--n_folds", "2", "--n_seeds", "2", "--n_trials", str(trials), "--hpconfig", str(hp),
            "--artifact_dir", str(tmp_path / "art")]  # fmt: skip
    return prepare(parse_config(args), "tune").plan


def a_room(free_bytes: int, free_files: int | None) -> Room:
    return Room(Path("/scratch/me"), Path("/scratch"), free_bytes, 10 * free_bytes, free_files,
                None if free_files is None else 10 * free_files)  # fmt: skip


def test_files_come_from_the_layout_and_bytes_from_a_measured_run(tmp_path: Path) -> None:
    plan = tune_plan(tmp_path)  # 10 trials x 2 folds x 2 seeds
    unmeasured = project(plan, 40, 10, "slurm", 4096, None)
    assert unmeasured.files == 40 * 12 + 10 * 3 + 30 + 10 * 3
    assert unmeasured.bytes == 40 * 7 * 4096  # a lower bound: one block per file, checkpoints unknown
    assert "checkpoints not counted" in unmeasured.describe()
    size = RunSize(checkpoint_bytes=100 * MIB, other_bytes=40 * KIB, source=tmp_path)
    measured = project(plan, 40, 10, "local", 4096, size, wandb=True)
    assert measured.files == 40 * (12 + 16) + 10 * 3 + 30
    assert measured.bytes == 40 * (100 * MIB + 40 * KIB)
    # --keep_checkpoints 2 with 3 trials running at once: at most 5 trials' checkpoints on disk at any time
    kept = project(plan, 40, 10, "local", 4096, size, keep_trials=2, slots=3)
    assert kept.bytes == 40 * 40 * KIB + 5 * 4 * 100 * MIB


def test_a_plan_that_cannot_fit_is_refused_naming_the_numbers_and_the_fix(tmp_path: Path) -> None:
    plan = tune_plan(tmp_path)
    projection = project(plan, 40, 10, "local", 4096, RunSize(10 * MIB, 40 * KIB, tmp_path))
    with pytest.raises(UsageError) as inodes:
        check(projection, a_room(10**12, 300), "--artifact_dir art")
    assert "inodes free" in str(inodes.value) and "300" in str(inodes.value) and "--keep_checkpoints K" in str(inodes.value)
    with pytest.raises(UsageError) as space:
        check(projection, a_room(100 * MIB, None), "--artifact_dir art")
    assert "100.0 MB free" in str(space.value) and "401.6 MB" in str(space.value)
    warning = check(projection, a_room(450 * MIB, 10**6), "--artifact_dir art")
    assert warning is not None and warning.startswith("warning: the plan needs") and "89%" in warning
    assert check(projection, a_room(10**12, 10**6), "--artifact_dir art") is None


def test_quota_output_of_lfs_and_quota_is_parsed() -> None:
    lfs = "     /lustre/scratch  5242880*  0 10485760  -   900000  0 1000000  -\n"
    assert parse_quota(lfs) == Quota(5242880 * KIB, 10485760 * KIB, 900000, 1000000)
    linux = (
        "Disk quotas for user me (uid 1000): \n"
        "     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n"
        "      /dev/sdb1    2048    4096       0       0      10     500       0       0\n"
    )
    assert parse_quota(linux) == Quota(2048 * KIB, 4096 * KIB, 10, 500)  # no hard limit: the soft one
    assert parse_quota("Disk quotas for user me (uid 1000): none\n") is None


def test_the_quota_is_the_tighter_bound_when_it_answers(tmp_path: Path) -> None:
    def fake_lfs(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert argv[:4] == ["lfs", "quota", "-q", "-u"]
        return subprocess.CompletedProcess(argv, 0, "  /x  1024  0  2048  -  7  0  10  -\n", "")

    limited = room(tmp_path, run=fake_lfs)
    assert (limited.free_bytes, limited.free_files, limited.quota) == (1024 * KIB, 3, "lfs quota")
    assert "3 of 10 inodes free" in limited.describe() and "(lfs quota)" in limited.describe()


def test_keep_checkpoints_values() -> None:
    assert [checkpoints_to_keep(v) for v in ("all", "none", "3", "0")] == [None, 0, 3, 0]
    with pytest.raises(UsageError, match="--keep_checkpoints 'best' is not all, none or a number"):
        checkpoints_to_keep("best")


def test_a_measured_run_of_the_same_task_is_found_in_the_artifact_dir(tmp_path: Path) -> None:
    art = tmp_path / "art"
    run = art / "_cross_validations" / "old" / "old-run-f0s42-abcdefgh"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x" * 50_000)
    (run / "run_result.json").write_text("{}")
    (art / "_cross_validations" / "old" / "run_specs.jsonl").write_text('{"run_name": "old-run-f0s42", "task": "sleep"}\n')
    other = art / "_cross_validations" / "other"
    other.mkdir()
    (other / "run_specs.jsonl").write_text('{"task": "synthetic-segmentation"}\n')
    assert capacity.same_task_plans(art, "sleep") == [art / "_cross_validations" / "old"]
    size = capacity.measure(capacity.same_task_plans(art, "sleep"))
    assert size is not None and size.checkpoint_bytes >= 50_000 and size.other_bytes > 0
