"""Helpers of the reliability suite: drive the CLI as a user would, and check a finished tree.

`check_tree` is the verdict every fault test ends with: after `nestling collect`, the parquet holds every planned
run exactly once and all of them succeeded (none lost), and no run trained an epoch twice (the epochs logged by
its attempts, logs/attempt-N/metrics.csv, are disjoint and together are 0..max_epochs-1).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from support import cli  # noqa: F401 - re-exported to the reliability tests
from support import poll as _poll

SLEEP = ["--task", "sleep", "--accelerator", "cpu", "--n_seeds", "1", "--quiet"]
SLURM_TASK = ["--cpus_per_task", "1", "--mem_gb", "1"]


@dataclass
class Figures:
    """What the suite did, for docs/reliability.md (printed at the end of the session)."""

    faults: Counter[str] = field(default_factory=Counter)
    classes: dict[str, tuple[int, int]] = field(default_factory=dict)  # failure class -> (runs hit, recovered)
    runs_checked: int = 0
    runs_lost: int = 0
    runs_trained_twice: int = 0

    def fault(self, kind: str, n: int = 1) -> None:
        self.faults[kind] += n


FIGURES = Figures()


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def start(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The CLI in the background (output to `log`, never a pipe that could fill up)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "nestling.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env if env is not None else dict(os.environ),
        )


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """The shared bounded poll, checking more often: these scenarios watch short-lived states."""
    return _poll(check, timeout, what, interval)


def planned_runs(root: Path) -> list[dict[str, Any]]:
    """Every run of the plan in `root`, with its absolute dir."""
    plan = json.loads((root / "plan.json").read_text())
    return [{**run, "dir": root / run["dir"]} for cv in plan["cvs"] for run in cv["runs"]]


def completed_epochs(run: Path) -> dict[int, list[int]]:
    """attempt -> the epochs it completed (those with an epoch-end train/loss row in its metrics.csv)."""
    out: dict[int, list[int]] = {}
    for path in sorted(run.glob("logs/attempt-*/metrics.csv")):
        attempt = int(path.parent.name.split("-")[1])
        with open(path, newline="") as f:
            out[attempt] = sorted({int(row["epoch"]) for row in csv.DictReader(f) if row.get("train/loss")})
    return out


def lock_pid(run: Path) -> int | None:
    try:
        return int(json.loads((run / "attempt.lock").read_text())["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def result(run: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run / "run_result.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, bytes]]:
    """path -> (mtime_ns, bytes) of every file below root, except names in `skip`."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name in skip:
                continue
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = (path.stat().st_mtime_ns, path.read_bytes())
    return out


def check_tree(
    root: Path, max_epochs: int, env: dict[str, str] | None = None, collect: bool = True
) -> dict[str, Any]:
    """The verdict: every planned run exactly once in the parquet, all success, no epoch trained twice.

    Returns run_name -> {"result", "epochs"} for further checks; adds to the suite's figures.
    """
    if collect:
        ok(cli("collect", str(root), "--quiet", env=env, timeout=120))
    runs = planned_runs(root)
    table = pl.read_parquet(root / "run_infos.parquet")
    rows = list(zip(table["run_name"].to_list(), table["run_id"].to_list(), strict=True))
    assert len(rows) == len(set(rows)) == len(runs), f"{len(rows)} rows for {len(runs)} planned runs: {rows}"
    assert set(rows) == {(r["run_name"], r["run_id"]) for r in runs}
    lost = [
        name for name, status in zip(table["run_name"], table["status"], strict=True) if status != "success"
    ]
    twice = []
    out = {}
    for run in runs:
        epochs = completed_epochs(run["dir"])
        flat = [e for attempt in sorted(epochs) for e in epochs[attempt]]
        if sorted(flat) != list(range(max_epochs)) or len(flat) != len(set(flat)):
            twice.append((run["run_name"], epochs))
        res = result(run["dir"])
        assert res is not None and res["run_id"] == run["run_id"], (run, res)
        attempts = json.loads((run["dir"] / "attempts.json").read_text())
        assert res["attempt"] == attempts, (run["run_name"], res["attempt"], attempts)
        out[run["run_name"]] = {"result": res, "epochs": epochs, "dir": run["dir"]}
    FIGURES.runs_checked += len(runs)
    FIGURES.runs_lost += len(lost)
    FIGURES.runs_trained_twice += len(twice)
    assert not lost, f"runs not successful: {lost}\n{table}"
    assert not twice, f"epochs trained twice or missing (attempt -> epochs): {twice}"
    return out


def grep_tree(root: Path, secrets: list[str]) -> list[str]:
    """Files below root whose bytes contain any of the secrets."""
    needles = [s.encode() for s in secrets]
    hits = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            data = (Path(dirpath) / name).read_bytes()
            hits += [f"{Path(dirpath) / name}: {n.decode()}" for n in needles if n in data]
    return hits


def write_tree(kind: str, args: list[str]) -> Path:
    """Plan and write a tree as the CLI would, without training anything; returns its root."""
    from nestling.core.options.config import parse_config
    from nestling.plan.preflight import prepare
    from nestling.plan.store import write_plan

    prepared = prepare(parse_config(args), kind)
    write_plan(prepared.plan, prepared.splits)
    return prepared.plan.root


def fake_success(run: Path, value: float = 0.5) -> None:
    """A run_result.json as a successful run writes it (for tests about collecting, not training)."""
    from nestling.core.tree.atomic import write_json
    from nestling.core.tree.run_result import RunResult
    from nestling.core.tree.run_state import RunState
    from nestling.plan.store import load_spec

    spec = load_spec(run)  # makes the run dir and its run_spec.json, as a starting run does
    res = RunResult.for_spec(
        spec, RunState.SUCCESS, metrics={"val/JaccardIndex": value, "val/Recall": value}, duration=1.0, attempt=1
    )
    write_json(run / "run_result.json", res.to_json())
