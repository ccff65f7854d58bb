"""Helpers shared by the suites that drive the real CLI, processes and cluster: CLI calls, bounded polls, and the
guard every real-path test goes through (skip on a machine without the tool, fail under CI)."""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from nestling.core.tree import naming
from nestling.core.tree.run_result import read_result
from nestling.plan.store import load_plan


def require(available: bool, what: str, fix: str) -> None:
    """A test needs a real tool (SLURM, podman, Chromium, mkdocs) this machine may lack: without it the test is
    skipped, naming the fix; under CI (the variable CI set, as .ci/run does) it fails instead, so that CI cannot
    pass without the real paths."""
    if available:
        return
    reason = f"{what} is not available ({fix})"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


def built_once(shared: Path, name: str, build: Callable[[Path], None]) -> Path:
    """The dir `shared/name`, built by `build(dir)` once per test run whatever the xdist worker asking: the first
    to take its lock builds it, the others wait and reuse it (a failed build is tried again by the next asker).
    For trees that tests only read; a test that changes one copies it first (shutil.copytree)."""
    target = shared / name
    with open(shared / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / f".{name}.built").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            build(target)
            (shared / f".{name}.built").touch()
    return target


def bench_tune(tmp_path: Path, n: int) -> Path:
    """A finished tune of n trials written by bench/collector.py (no training): for tests of the readers' fast paths."""
    repo = str(Path(__file__).resolve().parents[1])
    sys.path.insert(0, repo)
    try:
        from bench.collector import make_tree
    finally:
        sys.path.remove(repo)
    return make_tree(tmp_path, n)


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call `check` until it returns something truthy; fail with its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run `nestling ARGS` in a fresh interpreter, as a user would; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "nestling.cli", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=timeout,
        check=False,
    )


class Tables(HTMLParser):
    """table id -> rows of (cell text, {attribute: value}) as the page shows them."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, dict[str, str]]]]] = {}
        self._table: str | None = None
        self._cell: tuple[list[str], dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ([], a)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(("".join(self._cell[0]), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._table = None


_LOG_BLOCK, _LOG_HEADER = 32768, 7  # the .wandb file: LevelDB's log format (blocks; checksum, length, type)


def wandb_run_record(path: Path) -> Any:
    """The run record (project, job type, group, name, id as wandb stored them) of an offline run's .wandb file.

    The file is a LevelDB-style log of protobuf `Record`s after a 7-byte header; wandb has no reader for it in
    Python any more, and searching its bytes for a name proves little (the cv's name is part of the run's name)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is no .wandb file: {data[:7]!r}"
    pos, pending = 7, b""
    while pos + _LOG_HEADER <= len(data):
        left = _LOG_BLOCK - pos % _LOG_BLOCK
        if left < _LOG_HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + _LOG_HEADER])
        pending += data[pos + _LOG_HEADER : pos + _LOG_HEADER + length]
        pos += _LOG_HEADER + length
        if kind in (1, 4):  # FULL, or the LAST chunk of a record split over blocks
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "run":
                return record.run
    raise AssertionError(f"no run record in {path}")


def fold_values(root: Path) -> dict[int, dict[int, float]]:
    """trial index -> {folds done: the score a pruner sees then} of a tune with one seed per fold, read from the
    run results (the bowl task logs one val/score per run): the mean over the runs of folds 0..k-1."""
    values: dict[int, dict[int, float]] = {}
    for i, cv in enumerate(load_plan(root).cvs):
        scores = []
        for run in sorted(cv.runs, key=lambda r: r.fold):
            result = read_result(run.dir)
            if result is None or result.status != "success":
                break
            scores.append(float(result.metrics["val/score"]))
        values[i] = {k: sum(scores[:k]) / k for k in range(1, len(scores) + 1)}
    return values


def pruned_markers(root: Path) -> dict[int, dict[str, Any]]:
    """trial index -> its `_trials/{i}.pruned` record (the fold count it stopped after, its score then)."""
    paths = naming.TrialPaths(root)
    return {i: json.loads(paths.pruned(i).read_text()) for i in range(len(load_plan(root).cvs))
            if paths.pruned(i).exists()}  # fmt: skip


def assert_halving_pruned(root: Path, n_folds: int) -> list[int]:
    """What successive halving (rate 4, min resource 1) must have done in a tune whose trials ran in parallel, in
    whatever order: it pruned some trial (with a handful of trials a run of ever-better ones is all but
    impossible), only at rung 1 (the only rung below n_folds <= 4), each after exactly one fold with the score
    the tree holds, and never the trial with the best score at rung 1, which a subset of rivals cannot beat: that
    one ran every fold. The indices of the pruned trials."""
    assert 1 < n_folds <= 4
    pruned, values = pruned_markers(root), fold_values(root)
    assert pruned, f"no trial was pruned: {values}"
    for i, marker in pruned.items():
        assert marker["step"] == 1 and list(values[i]) == [1], (i, marker, values[i])
        assert marker["score"] == pytest.approx(values[i][1]), (i, marker, values[i])
    best = max(values, key=lambda i: values[i].get(1, -math.inf))
    assert best not in pruned and len(values[best]) == n_folds, (best, values)
    return sorted(pruned)


def tables(page: str) -> dict[str, list[list[tuple[str, dict[str, str]]]]]:
    parser = Tables()
    parser.feed(page)
    return parser.tables
