"""Adaptive search from the command line (issue 13): real workers of the local pool draw their trials."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from support import assert_halving_pruned, cli, fold_values, poll, pruned_markers

from nestling.core.tree import naming
from nestling.execute.search.pruners import MEDIAN_STARTUP_TRIALS

pytestmark = pytest.mark.e2e

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
    # pruning happened, at the rung, and spared the trial the rung's rule cannot stop (see assert_halving_pruned)
    assert assert_halving_pruned(root, n_folds=3) == sorted(pruned["hp_index"].to_list())


@pytest.mark.min_versions
def test_median_pruning_with_a_real_worker_stops_exactly_the_trials_the_rule_names(tmp_path: Path) -> None:
    """One worker runs the trials in order, so which trial the median rule stops, and after which fold, follows
    from the scores alone: recomputed here from the run results (not by nestling's pruner), it must match."""
    n_trials, n_folds = 8, 3
    done = cli("tune", *_args(tmp_path, "--name", "md", "--sampler", "tpe", "--pruner", "median", "--n_trials",
                              str(n_trials), "--strategy", "tune-parallel", "--devices", "1", "--tune_seed", "3"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = tmp_path / "art" / "md"
    values = fold_values(root)
    order = sorted(range(n_trials), key=lambda i: json.loads(naming.TrialPaths(root).draw(i).read_text())["drawn_time"])
    expected: dict[int, int] = {}  # trial -> the fold count it stops after
    complete: list[int] = []
    for i in order:  # Optuna's median rule, from MEDIAN_STARTUP_TRIALS complete trials on, between folds
        for step in range(1, n_folds):
            if step not in values[i]:
                break  # stopped sooner than the rule says: the comparison below shows it
            rivals = [values[j][step] for j in complete]
            best = max(values[i][k] for k in range(1, step + 1))
            if len(complete) >= MEDIAN_STARTUP_TRIALS and best < statistics.median(rivals):
                expected[i] = step
                break
        else:
            complete.append(i)
    assert expected, f"the rule stops no trial here ({values}): choose another --tune_seed"
    assert {i: m["step"] for i, m in pruned_markers(root).items()} == expected
    assert {i: len(v) for i, v in values.items()} == {i: expected.get(i, n_folds) for i in range(n_trials)}
    table = pl.read_parquet(root / naming.TUNE_INFOS).sort("hp_index")
    assert table["state"].to_list() == ["pruned" if i in expected else "complete" for i in range(n_trials)]


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
    args = _args(tmp_path, "--name", "k", "--sampler", "tpe", "--n_trials", "3", "--hp", "sleep_s=1")
    driver = subprocess.Popen([sys.executable, "-m", "nestling.cli", "tune", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    root = tmp_path / "art" / "k"

    def victim() -> int | None:
        for lock in root.glob(f"k-cv1/k-cv1-run-f1s42-*/{naming.RUN_LOCK}"):
            with contextlib.suppress(ValueError, KeyError, FileNotFoundError):
                return int(json.loads(lock.read_text())["pid"])
        return None

    os.kill(poll(victim, 180, "trial 1's second fold to start", interval=0.1), signal.SIGKILL)
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
