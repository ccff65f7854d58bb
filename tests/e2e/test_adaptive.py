"""Adaptive search from the command line (issue 13): real workers of the local pool draw their trials."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from nestling import naming
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
