"""Adaptive search from the command line (issue 13): real workers of the local pool draw their trials."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from nestling.core.tree import naming
from tests.support import cli

SPACE = """
[hyperparameters]
lr = {distribution = "loguniform", low = 1e-5, high = 1.0}
width = {low = 0.0, high = 1.0}
depth = {low = 1, high = 10}
"""


def _args(tmp_path: Path, *extra: str) -> list[str]:
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    return ["--task", "bowl", "--hpconfig", str(space), "--n_folds", "3", "--n_seeds", "1", "--max_epochs", "1",
            "--accelerator", "cpu", "--artifact_dir", str(tmp_path / "art"), "--quiet", *extra]  # fmt: skip


def test_tune_parallel_tpe_with_pruning_ends_with_exactly_n_trials(tmp_path: Path) -> None:
    done = cli("tune", *_args(tmp_path, "--name", "tp", "--sampler", "tpe", "--pruner", "successive-halving",
                              "--n_trials", "7", "--strategy", "tune-parallel", "--devices", "3"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = tmp_path / "art" / "tp"
    assert sorted(p.name for p in root.glob("tp-cv*")) == sorted(f"tp-cv{i}" for i in range(7))
    draws = [json.loads(naming.TrialPaths(root).draw(i).read_text())["params"] for i in range(7)]
    assert len({json.dumps(d, sort_keys=True) for d in draws}) == 7
    table = pl.read_parquet(root / naming.TUNE_INFOS).sort("hp_index")
    assert set(table["state"].to_list()) <= {"complete", "pruned"} and "complete" in table["state"].to_list()
    assert table["lr"].to_list() == [d["lr"] for d in draws]
    assert sorted(table["drawn_at"].to_list()) == list(range(7))
    status = json.loads(cli("status", str(root), "--json").stdout)["counts"]
    pruned = table.filter(pl.col("state") == "pruned")
    assert status["pruned"] == sum(3 - n for n in pruned["n_folds_done"].to_list())
    assert status["success"] + status["pruned"] == 21 and status["lost"] == 0


def test_cv_parallel_with_a_pruner_is_refused(tmp_path: Path) -> None:
    done = cli("tune", *_args(tmp_path, "--sampler", "tpe", "--pruner", "median", "--strategy", "cv-parallel"))
    assert done.returncode == 2
    assert "--pruner median needs the folds of a trial to run in order" in done.stderr
    assert not (tmp_path / "art").exists() or not any((tmp_path / "art").iterdir())


def test_dry_run_shows_configurations_drawn_at_start(tmp_path: Path) -> None:
    done = cli("tune", *_args(tmp_path, "--name", "d", "--sampler", "tpe", "--n_trials", "4", "--dry_run"))
    assert done.returncode == 0, done.stderr
    assert "4 trials, each drawn at start by --sampler tpe" in done.stdout


def test_a_worker_killed_mid_trial_and_resume_leave_every_trial_complete_or_pruned_once(tmp_path: Path) -> None:
    """SIGKILL the worker while it trains trial 1's second fold: that run is lost, the pool finishes the tune;
    --resume reruns it with the trial's drawn configuration and draws nothing again."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    args = _args(tmp_path, "--name", "k", "--sampler", "tpe", "--pruner", "median", "--n_trials", "3",
                 "--hp", "sleep_s=3")  # fmt: skip
    driver = subprocess.Popen([sys.executable, "-m", "nestling.cli", "tune", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    root = tmp_path / "art" / "k"
    deadline = time.time() + 180
    victim = None
    while victim is None and time.time() < deadline:
        for lock in root.glob(f"k-cv1/k-cv1-run-f1s42-*/{naming.RUN_LOCK}"):
            with contextlib.suppress(ValueError, KeyError, FileNotFoundError):
                victim = json.loads(lock.read_text())["pid"]
        time.sleep(0.2)
    assert victim is not None, "trial 1 never reached its second fold"
    os.kill(victim, signal.SIGKILL)
    out, err = driver.communicate(timeout=240)
    def drawn() -> dict[int, tuple[object, object]]:
        records = [json.loads(naming.TrialPaths(root).draw(i).read_text()) for i in range(3)]
        return {i: (r["params"], r["drawn_time"]) for i, r in enumerate(records)}

    before = drawn()
    lost = json.loads(cli("status", str(root), "--json").stdout)["counts"]["lost"]
    assert lost == 1, out + err
    resumed = cli("tune", "--resume", "k", "--artifact_dir", str(tmp_path / "art"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    after = drawn()
    assert after == before  # the lost trial reran with its configuration; nothing drawn twice
    table = pl.read_parquet(root / naming.TUNE_INFOS)
    assert table.height == 3 and set(table["state"].to_list()) <= {"complete", "pruned"}
    counts = json.loads(cli("status", str(root), "--json").stdout)["counts"]
    assert counts["lost"] == counts["failed"] == 0 and counts["success"] + counts["pruned"] == 9
