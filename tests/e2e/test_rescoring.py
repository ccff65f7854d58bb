"""A scoring metric the task does not log (issue 21 #10): the error says what the task logs and gives one command that
works; a resume may score on other metrics, which retrains nothing that finished and recomputes the tables."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import polars as pl
import pytest
from support import cli

from nestling.core.tree import naming

pytestmark = pytest.mark.e2e

SLEEP = ["--task", "sleep", "--hp", "sleep_s=0", "--n_folds", "2", "--n_seeds", "1", "--max_epochs", "1",
         "--accelerator", "cpu", "--sampler", "grid", "--n_trials", "2"]  # fmt: skip


def tune(tmp_path: Path, name: str, *extra: str) -> tuple[Path, str]:
    hp = tmp_path / "hp.toml"
    hp.write_text("[hyperparameters]\nvalue = [0.3, 0.7]\n")
    done = cli("tune", *SLEEP, "--hpconfig", str(hp), "--artifact_dir", str(tmp_path / "art"), "--name", name, *extra)
    return tmp_path / "art" / name, done.stdout + done.stderr


def result_times(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob(naming.RUN_RESULT)}


def test_the_hint_of_a_metric_the_task_does_not_log_works(tmp_path: Path) -> None:
    root, out = tune(tmp_path, "sm", "--scoring_metric", "val/nothere")
    assert "score nan" not in out and "± nan" not in out
    said = re.search(r"MissingMetricError: the run logged no val/nothere to score \(it logged ([^)]*)\); log it in "
                     r"validation_step and resume, or score on logged metrics: (nestling tune --resume sm "
                     r"--scoring_metric \S+ --force)", out)  # fmt: skip
    assert said, out
    assert "val/JaccardIndex" in said.group(1).split(", ")
    hint = shlex.split(said.group(2))
    done = cli(*hint[1:], "--artifact_dir", str(tmp_path / "art"), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    infos = pl.read_parquet(root / naming.TUNE_INFOS)
    assert infos["state"].to_list() == ["complete", "complete"] and infos["score"].is_nan().sum() == 0
    plan = json.loads((root / naming.PLAN).read_text())
    assert plan["options"]["cv"]["scoring_metric"] == [hint[hint.index("--scoring_metric") + 1]]


def test_a_finished_tune_is_rescored_without_training(tmp_path: Path) -> None:
    root, _ = tune(tmp_path, "rs", "--quiet")
    before = result_times(root)
    art = str(tmp_path / "art")
    refused = cli("tune", "--resume", "rs", "--artifact_dir", art, "--scoring_metric", "val/nothere", "--force")
    assert refused.returncode == 2
    assert "no finished run of 'rs' logged val/nothere; they logged " in refused.stderr
    done = cli("tune", "--resume", "rs", "--artifact_dir", art, "--scoring_metric", "val/loss:lower", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to resume" in done.stdout
    assert result_times(root) == before  # nothing trained again
    runs = pl.read_parquet(root / naming.RUN_INFOS)
    assert runs["run_score"].to_list() == pytest.approx((-runs["val/loss"]).to_list())
    infos = pl.read_parquet(root / naming.TUNE_INFOS)
    by_cv = runs.group_by("cv_name").agg(pl.col("run_score").mean()).sort("cv_name")
    assert infos.sort("cv_name")["score"].to_list() == pytest.approx(by_cv["run_score"].to_list())
