"""Issue 21 #3: every file and directory nestling creates gets the mode the umask gives (0644 / 0755 under umask
022), never tempfile's private 0600 / 0700. Through the real CLI (a cv, its report and PNGs, under umask 027):
tests/e2e/test_worker_threads_local.py; on SLURM: tests/cluster/test_worker_threads_slurm.py."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from nestling.core.tree import array_claims, atomic, attempt_lock, supervisor_pid
from nestling.core.tree.naming import ArrayLaunchPaths, RunPaths
from nestling.execute.cv_table import write_parquet_atomic


@pytest.fixture(params=[0o022, 0o027, 0o002, 0o077], ids=lambda m: f"umask-{m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing_it(umask: int) -> None:
    assert atomic.current_umask() == umask
    assert atomic.current_umask() == umask  # unchanged by the first read
    assert atomic.file_mode() == 0o666 & ~umask


def test_every_writer_honours_the_umask(umask: int, tmp_path: Path) -> None:
    expected = 0o666 & ~umask
    atomic.write_atomic(tmp_path / "report.html", "<html></html>")
    atomic.write_json(tmp_path / "plan.json", {"a": 1}, compact=True)
    write_parquet_atomic(pl.DataFrame({"x": [1, 2]}), tmp_path / "run_infos.parquet")
    run = RunPaths(tmp_path / "run")
    run.dir.mkdir()
    assert attempt_lock.acquire(run, "this-host")
    assert supervisor_pid.claim_supervision(tmp_path)
    launch = ArrayLaunchPaths(atomic.unique_dir(tmp_path, prefix="launch-"))
    assert array_claims.claim(launch, 0, "123_0")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"report.html", "plan.json", "run_infos.parquet", "attempt.lock", "_supervisor.pid"}
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written} == {
        str(p.relative_to(tmp_path)): oct(expected) for p in written
    }
    assert mode(launch.dir) == 0o777 & ~umask
    assert not [p for p in tmp_path.rglob(".*tmp*")]  # no temporary file left behind


def test_temporary_file_is_removed_when_the_mode_cannot_be_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, mode: int) -> None:
        raise PermissionError("fchmod refused")

    monkeypatch.setattr(os, "fchmod", refuse)
    with pytest.raises(PermissionError):
        atomic.write_atomic(tmp_path / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []
