"""execute/retry.py through the worker's own loop (worker.run_dirs), on real tiny runs of the fault task: each
failure class gets its response, retries keep the run id, count the attempt up, and train no epoch twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestling.core.options.config import parse_config
from nestling.core.tree import failfast, fault_ledger
from nestling.core.tree.failure_class import FailureClass
from nestling.core.tree.run_result import read_result
from nestling.core.tree.run_state import RunState
from nestling.execute.worker import run_dirs
from nestling.plan.preflight import prepare
from nestling.plan.store import write_plan

TASK = "nestling.testing.fault_task:FaultTask"


def plan(tmp_path: Path, *hp: str, max_retries: int = 2, folds: int = 2) -> tuple[Path, list[str]]:
    """A cv of `folds` one-seed runs of the fault task (2 epochs), written and armed as a launch arms it."""
    args = ["--task", TASK, "--accelerator", "cpu", "--n_seeds", "1", "--n_folds", str(folds), "--max_epochs", "2",
            "--artifact_dir", str(tmp_path / "art"), "--name", "c", "--hp", "sleep_s=0",
            "--hp", f"fault_dir={tmp_path / 'faults'}", *[a for h in hp for a in ("--hp", h)]]  # fmt: skip
    prepared = prepare(parse_config(args), "cv")
    write_plan(prepared.plan, prepared.splits)
    root = prepared.plan.root
    failfast.arm(root, 3)
    fault_ledger.open_launch(root, max_retries)
    return root, [str(r.dir) for r in prepared.plan.runs]


def epochs(run: Path) -> dict[int, list[int]]:
    out = {}
    for path in sorted(run.glob("logs/attempt-*/metrics.csv")):
        rows = path.read_text().splitlines()[1:]
        out[int(path.parent.name.split("-")[1])] = sorted({int(r.split(",")[0]) for r in rows if r.split(",")[2]})
    return out


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NESTLING_RETRY_BACKOFF_S", "0")
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    monkeypatch.delenv("NESTLING_MEMORY_FRACTION", raising=False)


def test_a_transient_io_error_is_retried_in_place_from_the_last_checkpoint(tmp_path: Path) -> None:
    root, dirs = plan(tmp_path, "fault=estale", folds=2)
    assert run_dirs(dirs) == [RunState.SUCCESS, RunState.SUCCESS]
    for d in map(Path, dirs):
        result, failed = read_result(d), json.loads((d / "run_result.attempt-1.json").read_text())
        assert result is not None and (result.status, result.attempt, result.failure_class) == (RunState.SUCCESS, 2, None)
        assert (failed["status"], failed["failure_class"], failed["run_id"]) == ("failed", "transient_io", result.run_id)
        assert epochs(d) == {1: [0], 2: [1]}  # attempt 2 went on after the epoch attempt 1 finished
        assert fault_ledger.retries(root, result.run_id) == 1
    assert failfast.stopped(root) is None


def test_retries_end_at_max_retries(tmp_path: Path) -> None:
    root, dirs = plan(tmp_path, "fault=estale", "fault_times=0", max_retries=1, folds=2)
    assert run_dirs(dirs[:1]) == [RunState.FAILED]
    result = read_result(Path(dirs[0]))
    assert result is not None and (result.attempt, result.failure_class) == (2, FailureClass.TRANSIENT_IO)
    assert fault_ledger.retries(root, result.run_id) == 1
    assert run_dirs(dirs[:1]) == [RunState.FAILED]  # a requeued task does not retry it again either
    assert read_result(Path(dirs[0])) == result


def test_a_node_fault_marks_the_node_stops_its_worker_and_the_run_goes_on_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, dirs = plan(tmp_path, "fault=ecc", "fault_node=node2", "fault_times=0", folds=3)
    monkeypatch.setenv("SLURMD_NODENAME", "node2")
    assert run_dirs(dirs) == [RunState.FAILED, RunState.NOT_STARTED, RunState.NOT_STARTED]
    (broken,) = fault_ledger.broken_nodes(root)
    assert broken.node == "node2" and "uncorrectable ECC error" in broken.error
    first = read_result(Path(dirs[0]))
    assert first is not None and first.failure_class is FailureClass.NODE and first.host == "node2"
    assert failfast.stopped(root) is None  # a node fault is no systematic error
    monkeypatch.setenv("SLURMD_NODENAME", "node1")  # the requeued task, on another node
    assert run_dirs(dirs) == [RunState.SUCCESS] * 3
    again = read_result(Path(dirs[0]))
    assert again is not None and (again.run_id, again.attempt, again.host) == (first.run_id, 2, "node1")
    assert epochs(Path(dirs[0])) == {1: [0], 2: [1]}
    assert fault_ledger.retries(root, first.run_id) == 1


def test_a_user_error_is_never_retried(tmp_path: Path) -> None:
    root, dirs = plan(tmp_path, "fault=user", "fault_times=0", folds=2)
    assert run_dirs(dirs[:1]) == [RunState.FAILED]
    assert run_dirs(dirs[:1]) == [RunState.FAILED]  # e.g. a requeued task: the failure is kept, not rerun
    result = read_result(Path(dirs[0]))
    assert result is not None and (result.attempt, result.failure_class) == (1, FailureClass.USER)
    assert fault_ledger.retries(root, result.run_id) == 0


def test_out_of_memory_on_a_shared_gpu_waits_for_a_worker_alone_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, dirs = plan(tmp_path, "fault=oom", "fault_shared=true", "fault_times=0", folds=2)
    monkeypatch.setenv("NESTLING_MEMORY_FRACTION", "0.5")
    assert run_dirs(dirs[:1]) == [RunState.FAILED]
    assert run_dirs(dirs[:1]) == [RunState.FAILED]  # another shared worker leaves it alone
    first = read_result(Path(dirs[0]))
    assert first is not None and first.failure_class is FailureClass.OOM_SHARED
    monkeypatch.delenv("NESTLING_MEMORY_FRACTION")  # the phase alone on the GPU
    assert run_dirs(dirs[:1]) == [RunState.SUCCESS]
    again = read_result(Path(dirs[0]))
    assert again is not None and again.attempt == 2 and epochs(Path(dirs[0])) == {1: [0], 2: [1]}


def test_a_full_file_system_stops_the_plan(tmp_path: Path) -> None:
    root, dirs = plan(tmp_path, "fault=enospc", "fault_times=0", folds=3)
    assert run_dirs(dirs) == [RunState.FAILED, RunState.NOT_STARTED, RunState.NOT_STARTED]
    result = read_result(Path(dirs[0]))
    assert result is not None and result.failure_class is FailureClass.STORAGE
    stop = failfast.stopped(root)
    assert stop is not None and stop.storage and "No space left on device" in stop.error
    assert "free space or raise the quota, then `--resume c`" in stop.message("c")
