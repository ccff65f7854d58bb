"""Fail fast (issue 12): once N runs failed with the same error and none succeeded, nothing more starts.

A task that fails every run the same way while a marker file exists stands in for a systematic mistake (a scoring
metric the module never logs, a wrong data path); removing the marker is the fix, and `--resume` then runs what
never started.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from support import cli

from nestling.core.tree import naming

TASK = '''
import os
from pathlib import Path

from nestling.tasks.sleep import SleepTask


class BrokenUntilFixed(SleepTask):
    def build_model(self, hparams):
        if Path(os.environ["FAILFAST_MARKER"]).exists():
            raise FileNotFoundError("no such file: /data/tiles.zarr")
        return super().build_model(hparams)
'''


def _setup(tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    (tmp_path / "fftask.py").write_text(TASK)
    marker = tmp_path / "broken"
    marker.touch()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "FAILFAST_MARKER": str(marker)}  # fmt: skip
    args = ["--task", "fftask:BrokenUntilFixed", "--artifact_dir", str(tmp_path / "art"), "--n_folds", "3",
            "--n_seeds", "2", "--max_epochs", "1", "--hp", "sleep_s=0", "--accelerator", "cpu", "--quiet"]  # fmt: skip
    return env, args


def _results(root: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"*/{naming.RUN_RESULT}"))]


def test_identical_failures_stop_the_cv_and_resume_runs_the_rest(tmp_path: Path) -> None:
    env, args = _setup(tmp_path)
    done = cli("cv", *args, "--name", "ff", env=env)
    assert done.returncode == 1, done.stderr
    assert "stopped after 3 identical failures: FileNotFoundError: no such file: /data/tiles.zarr" in done.stderr
    assert "--resume ff" in done.stderr
    root = tmp_path / "art" / naming.CV_ROOT / "ff"
    results = _results(root)
    assert [r["status"] for r in results] == ["failed"] * 3  # 6 planned, 3 never started
    status = cli("status", str(root), "--json", env=env)
    counts = json.loads(status.stdout)["counts"]
    assert counts["failed"] == 3 and counts["not started"] == 3, status.stdout

    Path(env["FAILFAST_MARKER"]).unlink()  # the fix
    again = cli("cv", "--resume", "ff", "--artifact_dir", str(tmp_path / "art"), "--quiet", env=env)
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in _results(root)] == ["success"] * 6


def test_fail_fast_zero_runs_everything(tmp_path: Path) -> None:
    env, args = _setup(tmp_path)
    done = cli("cv", *args, "--name", "all", "--fail_fast", "0", env=env)
    assert done.returncode == 1
    assert "stopped after" not in done.stderr
    assert [r["status"] for r in _results(tmp_path / "art" / naming.CV_ROOT / "all")] == ["failed"] * 6
