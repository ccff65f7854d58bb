"""A damaged tree (issue 23 §2): every reader names each file it cannot parse in one line with what to do, and never
crashes on it; a damaged plan.json is restored from its copy, or refused with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nestling.commands.resume import prepare_resume
from nestling.commands.status import read_status
from nestling.core.options.config import parse_config
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_json
from nestling.core.tree.run_result import RunResult
from nestling.core.tree.run_state import RunState
from nestling.plan.preflight import prepare
from nestling.plan.store import load_plan, load_spec, write_plan
from nestling.read.collect import collect
from nestling.read.report.compose import write_report

ARGS = ["--task", "sleep", "--accelerator", "cpu", "--n_seeds", "1", "--n_folds", "3", "--max_epochs", "1"]


def finished_cv(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A cv of 3 runs whose results say success (written as a worker writes them; nothing trained)."""
    prepared = prepare(parse_config([*ARGS, "--artifact_dir", str(tmp_path / "art"), "--name", "d"]), "cv")
    write_plan(prepared.plan, prepared.splits)
    runs = [r.dir for r in prepared.plan.runs]
    for run in runs:
        spec = load_spec(run)
        result = RunResult.for_spec(spec, RunState.SUCCESS, metrics={"val/JaccardIndex": 0.5, "val/Recall": 0.5},
                                    attempt=1, duration=1.0)  # fmt: skip
        write_json(run / naming.RUN_RESULT, result.to_json())
    return prepared.plan.root, runs


def lines(err: str, needle: str) -> list[str]:
    return [line for line in err.splitlines() if needle in line]


def test_status_collect_and_report_name_each_damaged_file_and_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, runs = finished_cv(tmp_path)
    cut = runs[0] / naming.RUN_RESULT
    cut.write_bytes(cut.read_bytes()[:120])  # a copy cut short
    (runs[1] / naming.RUN_RESULT).write_text("")  # a crashed NFS client's empty file
    naming.launch_file(root).write_text("{ not json")
    plan = root / naming.PLAN
    plan.write_bytes(plan.read_bytes()[:200])

    status = read_status(root)
    err = capsys.readouterr().err
    assert status.counts[RunState.SUCCESS] == 1 and len(status.runs) == 3
    (restored,) = lines(err, "plan.json cannot be read")
    assert "restored from plan.copy.json" in restored
    assert json.loads(plan.read_text())["name"] == "d" and (root / "plan.json.unreadable").is_file()
    assert len(lines(err, f"{cut} cannot be read (not a run result")) == 1
    assert len(lines(err, f"{runs[1] / naming.RUN_RESULT} cannot be read (empty)")) == 1
    assert "--resume reruns it" in lines(err, str(cut))[0]
    assert len(lines(err, "launch.json cannot be read")) == 1
    assert [s.error for s in status.runs[:2]] == ["run_result.json cannot be read; --resume reruns the run"] * 2

    collected = collect(root)
    assert collected.counts == {RunState.SUCCESS: 1, RunState.FAILED: 0, RunState.MISSING: 2, RunState.PRUNED: 0}
    write_report(root, collected, png=False)
    assert (root / naming.REPORT).is_file()
    assert capsys.readouterr().err == ""  # each file is named once per process


def test_resume_reruns_a_run_whose_result_is_unreadable_and_keeps_the_file_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, runs = finished_cv(tmp_path)
    (runs[2] / naming.RUN_RESULT).write_text('{"status": "succ')
    config = parse_config([*ARGS, "--artifact_dir", str(tmp_path / "art"), "--resume", "d"])
    resumed = prepare_resume("cv", config, set())
    assert resumed.run_dirs == [[str(runs[2])]]
    assert (runs[2] / "run_result.unreadable.json").read_text() == '{"status": "succ'
    assert not (runs[2] / naming.RUN_RESULT).exists()


def test_a_damaged_plan_without_an_intact_copy_is_refused_with_exit_2(tmp_path: Path) -> None:
    root, _ = finished_cv(tmp_path)
    (root / naming.PLAN).write_text("{")
    naming.plan_copy(root).write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for args in (["status", str(root)], ["collect", str(root)], ["cv", "--resume", "d", "--artifact_dir",
                                                                  str(tmp_path / "art")]):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "nestling.cli", *args], capture_output=True, text=True, env=env)
        assert done.returncode == 2, (args, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("nestling: error: ") and "plan.json cannot be read" in line and "backup" in line


def test_a_damaged_spec_file_falls_back_to_the_planned_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, runs = finished_cv(tmp_path)
    planned = load_spec(runs[0])
    (runs[0] / naming.RUN_SPEC).write_text('{"run_name": ')
    specs = root / naming.RUN_SPECS
    original = specs.read_text()
    specs.write_text(original[: len(original) // 2])  # run_specs.jsonl cut in the middle of a line
    assert load_spec(runs[0]) == planned
    assert specs.read_text() == original  # derived again from plan.json, byte for byte
    err = capsys.readouterr().err
    assert len(lines(err, "run_spec.json cannot be read")) == 1
    assert len(lines(err, "run_specs.jsonl cannot be read (not valid JSON lines); derived again")) == 1
    assert load_plan(root).name == "d"
