"""Issue 15 #1: the local pool starts before the CLI plans, so the two torch imports overlap instead of adding up."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nestling.commands.cli import main
from nestling.core.options.config import parse_config
from nestling.core.tree.run_state import RunState
from nestling.launch import factory
from nestling.launch.local import LocalLauncher


def test_prestart_applies_to_the_local_launcher_only() -> None:
    for argv in (
        ["--dry_run"],
        ["--launcher", "slurm"],
        ["--launcher", "submitit-local"],
        ["--container_image", "img.sif"],
        ["--devices", "x"],  # wrong flags: prepare reports them, nothing starts
    ):
        assert factory.prestart_local(parse_config(argv)) is None, argv


def test_a_planning_error_kills_the_prestarted_pool_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[subprocess.Popen[str]] = []
    original = LocalLauncher.prestart

    def spy(self: LocalLauncher, preload: str | None = None, count: int | None = None, code: str | None = None) -> None:
        original(self, preload, count, code)
        started.extend(proc for proc, _ in self._prestarted.values())

    monkeypatch.setattr(LocalLauncher, "prestart", spy)
    argv = ["cv", "--task", "sleep", "--n_folds", "1", "--accelerator", "cpu", "--artifact_dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--n_folds 1" in err[0]
    assert len(started) == 1  # the pool was started before planning ...
    assert all(proc.poll() is not None for proc in started)  # ... and is gone, having run nothing
    assert list(tmp_path.iterdir()) == []


def test_a_prestarted_worker_is_used_and_its_early_stderr_reaches_the_log(tmp_path: Path) -> None:
    rc = main(["cv", "--task", "sleep", "--hp", "sleep_s=0.05", "--max_epochs", "1", "--n_folds", "2",
               "--n_seeds", "1", "--accelerator", "cpu", "--artifact_dir", str(tmp_path), "--name", "p", "--quiet"])  # fmt: skip
    assert rc == 0
    root = tmp_path / "_cross_validations" / "p"
    results = [json.loads(p.read_text()) for p in sorted(root.glob("*/run_result.json"))]
    assert [r["status"] for r in results] == ["success", "success"]
    startups = sorted((r["worker_startup_s"] for r in results), key=lambda s: s is None)
    assert startups[0] is not None and startups[0] > 0.5  # the preload's import, recorded once
    assert startups[1] is None
    launch = json.loads((root / "launch.json").read_text())
    assert launch["launches"][-1]["workers"] == 1
    log = (root / "_workers" / "worker-0.log").read_text()
    assert log.count("attempt 1") == 2  # both runs' lines, through the relay


def test_no_more_workers_prestart_than_the_plan_could_use() -> None:
    cpu4 = ["--strategy", "cv-parallel", "--accelerator", "cpu", "--devices", "4"]
    assert factory.max_runs(parse_config(["--n_folds", "2", "--n_seeds", "1", *cpu4]), "cv") == 2
    assert factory.max_runs(parse_config(["--n_folds", "2", "--seeds", "1", "2", "3"]), "cv") == 6
    assert factory.max_runs(parse_config(["--fold_method", "none", "--n_seeds", "2", "--n_trials", "3"]), "tune") == 6
    assert factory.max_runs(parse_config([]), "run") == 1
    pool = factory.prestart_local(parse_config(["--task", "sleep", "--n_folds", "2", "--n_seeds", "1", *cpu4]), "cv")
    assert pool is not None
    try:
        assert len(pool.slots) == 4 and pool.prestarted == 2
    finally:
        pool.discard()
    assert pool.prestarted == 0


def test_fewer_units_than_slots_leaves_no_worker_behind(tmp_path: Path) -> None:
    from nestling.launch.base import Progress

    class Quiet(Progress):
        def run_done(self, run_dir: str, status: RunState) -> None:
            pass

        def set_done(self, done: int, counts: dict[str, int]) -> None:
            pass

    pool = LocalLauncher([None, None, None])
    pool.prestart("")
    procs = [proc for proc, _ in pool._prestarted.values()]
    assert len(procs) == 3
    record = pool.launch(tmp_path, [], Quiet())
    assert record.workers == 1 and pool.prestarted == 0
    assert all(proc.poll() is not None for proc in procs)


def test_the_worker_describes_the_task_and_the_cli_never_imports_it(tmp_path: Path) -> None:
    """A task module with lightning at the top is imported by the worker only: the CLI plans from its description."""
    import os
    import sys

    (tmp_path / "heavy_task_mod.py").write_text(
        "import os\n"
        "import lightning  # noqa: F401\n"
        f"open({str(tmp_path / 'imported_by')!r}, 'a').write(str(os.getpid()) + '\\n')\n"
        "from nestling.tasks.sleep import SleepTask\n"
        "TASK = SleepTask()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    cmd = [sys.executable, "-m", "nestling.cli", "cv", "--task", "heavy_task_mod:TASK", "--hp", "sleep_s=0.05",
           "--max_epochs", "1", "--n_folds", "2", "--n_seeds", "1", "--accelerator", "cpu",
           "--artifact_dir", str(tmp_path / "a"), "--name", "d", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    pids = (tmp_path / "imported_by").read_text().split()
    assert len(pids) == 1 and pids[0] != str(proc.pid)  # one import, in the worker
    plan = json.loads((tmp_path / "a" / "_cross_validations" / "d" / "plan.json").read_text())
    assert plan["options"]["cv"]["scoring_metric"] == ["val/JaccardIndex", "val/Recall"]  # the task's declaration


def test_a_task_the_worker_cannot_load_is_reported_by_the_cli_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["cv", "--task", "no_such_module_x:TASK", "--accelerator", "cpu", "--artifact_dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot import module 'no_such_module_x'" in err[0]


def test_described_task_round_trips_the_planning_half() -> None:
    from nestling.core.ml.task import DescribedTask, declared_scoring_metrics, load_task
    from nestling.execute.startup import describe_task

    task = load_task("synthetic-segmentation")
    reply = describe_task("synthetic-segmentation")
    described = DescribedTask("synthetic-segmentation", json.loads(json.dumps(reply))["task"])
    assert described.metadata().equals(task.metadata())
    assert described.metadata().schema == task.metadata().schema
    assert described.default_hparams() == task.default_hparams()
    assert declared_scoring_metrics(described) == declared_scoring_metrics(task)
    assert described.data_dirs() == []
    assert "task_error" in describe_task("no_such_module_x:TASK")
