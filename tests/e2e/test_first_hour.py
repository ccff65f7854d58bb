"""What a newcomer meets in the first hour (issue 16): Ctrl-C, failure reasons, tables, ranking, dry runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import poll

pytestmark = pytest.mark.e2e


def _results(root: Path) -> list[Path]:
    return list(root.glob("*/run_result.json"))


def test_ctrl_c_stops_a_local_sweep_and_leaves_it_resumable(tmp_path: Path) -> None:
    """A real SIGINT to the process group (a terminal's Ctrl-C): no more runs start, launch.json is written, the
    resume command is printed, exit 130 within seconds; status calls the unfinished runs interrupted."""
    args = [
        sys.executable, "-m", "nestling.cli", "cv", "--task", "sleep", "--hp", "sleep_s=2.0", "--max_epochs", "3",
        "--n_folds", "5", "--n_seeds", "1", "--accelerator", "cpu", "--name", "stopme",
        "--artifact_dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    root = tmp_path / "_cross_validations" / "stopme"
    try:
        # the first run is training (its attempt lock exists) and none has ended
        poll(lambda: list(root.glob("*/attempt.lock")), 90, "the first run to start")
        time.sleep(1.0)
        assert not _results(root)
        os.killpg(proc.pid, signal.SIGINT)
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, f"stdout:\n{out}\nstderr:\n{err}"
    assert took < 8, f"took {took:.1f} s to stop"
    assert "nestling cv --resume stopme" in err
    assert len(_results(root)) == 0  # the run in progress stopped, the other four never started
    launches = json.loads((root / "launch.json").read_text())["launches"]
    assert launches[-1]["interrupted"] is True
    assert not launches[-1].get("lost_runs")
    status = subprocess.run(
        [sys.executable, "-m", "nestling.cli", "status", str(root), "--json"], capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip
    states = [r["state"] for r in json.loads(status.stdout)["runs"]]
    assert states == ["interrupted"] * 5
    assert json.loads(status.stdout)["counts"]["interrupted"] == 5


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    """A worker that takes long to save (a slow epoch start) is killed by the second Ctrl-C."""
    args = [
        sys.executable, "-m", "nestling.cli", "cv", "--task", "sleep", "--hp", "sleep_s=30.0", "--max_epochs", "1",
        "--n_folds", "2", "--n_seeds", "1", "--accelerator", "cpu", "--name", "stopnow",
        "--artifact_dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    root = tmp_path / "_cross_validations" / "stopnow"
    try:
        poll(lambda: list(root.glob("*/attempt.lock")), 90, "the first run to start")
        # ignore the preemption signal in the worker, so only the second Ctrl-C can stop it
        lock = json.loads(next(root.glob("*/attempt.lock")).read_text())
        os.kill(lock["pid"], signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None  # the first Ctrl-C waits for the worker to save
        os.killpg(proc.pid, signal.SIGINT)
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, f"stdout:\n{out}\nstderr:\n{err}"
    assert took < 8
    launches = json.loads((root / "launch.json").read_text())["launches"]
    assert launches[-1]["interrupted"] is True


SLEEP_CV = ["cv", "--task", "sleep", "--hp", "sleep_s=0.0", "--max_epochs", "1", "--n_seeds", "1",
            "--accelerator", "cpu"]  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "nestling.cli", *args], capture_output=True, text=True, env=env,
                          timeout=240)  # fmt: skip


def test_failed_runs_say_why_in_the_summary_once(tmp_path: Path) -> None:
    # lr=-1 is a number, as the task's default (preflight accepts it), that SGD refuses: every run fails in fit
    done = _cli(*SLEEP_CV, "--n_folds", "3", "--hp", "lr=-1", "--artifact_dir", str(tmp_path), "--name", "why")
    assert done.returncode == 1
    root = tmp_path / "_cross_validations" / "why"
    error = "ValueError: Invalid learning rate: -1.0"
    lines = done.stdout.splitlines()
    assert f"3 runs: {error}" in lines
    assert f"see nestling status {root}" in lines
    assert done.stdout.count(error) == 1  # once, with its count, not once per run
    assert error not in done.stderr  # the outcome line does not repeat what the summary said
    assert done.stderr.splitlines()[-1] == f"cv why: 0 of 3 runs succeeded; 1 distinct error above; see nestling status {root}"


def test_summary_table_fits_a_terminal_and_all_shows_every_metric(tmp_path: Path) -> None:
    done = _cli(*SLEEP_CV, "--n_folds", "2", "--artifact_dir", str(tmp_path), "--name", "a-rather-long-cv-name")
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if "run_name" in line)
    # the scoring metrics and the score, whole; no other metric column by default
    assert "val/JaccardIndex" in header and "val/Recall" in header and "run_score" in header
    assert "val/loss" not in header and "train/loss" not in header and "…" not in header
    assert "│ …-run-f0s42 │" in done.stdout  # the part of the name that tells runs apart
    root = tmp_path / "_cross_validations" / "a-rather-long-cv-name"
    assert f"2 more metrics in run_infos.parquet; all columns: nestling collect {root} --all" in done.stdout
    full = _cli("collect", str(root), "--all")
    assert full.returncode == 0, full.stderr
    # every column at 100 characters: the metric headers then break after their prefix (`val/` over `loss`)
    lines = [[cell.strip() for cell in line.strip("┃").split("┃")] for line in full.stdout.splitlines()
             if line.startswith("┃")]  # fmt: skip
    headers = ["".join(parts) for parts in zip(*lines, strict=True)]
    assert {"val/loss", "train/loss", "val/JaccardIndex", "run_score"} <= set(headers), headers
    assert "not shown" not in full.stdout


def test_why_a_cv_is_unstable_is_shown_in_the_summary_and_in_status(tmp_path: Path) -> None:
    # value=0: the sleep task logs val/JaccardIndex = val/Recall = 0, which cannot be scored
    done = _cli(*SLEEP_CV, "--n_folds", "2", "--hp", "value=0.0", "--artifact_dir", str(tmp_path), "--name", "zero")
    root = tmp_path / "_cross_validations" / "zero"
    assert f"score nan (unstable: zero-run-f0s42: val/JaccardIndex=0 (and 1 more)); table: {root}/run_infos.parquet" \
        in done.stdout.splitlines()  # fmt: skip
    status = _cli("status", str(root), "--json")
    runs = json.loads(status.stdout)["runs"]
    assert [(r["state"], r["unstable_reason"]) for r in runs] == [("success", "val/JaccardIndex=0")] * 2
    text = _cli("status", str(root)).stdout
    assert "2 successful runs unstable (not in the cv score)" in text
    assert "unstable: val/JaccardIndex=0" in text


def test_a_tune_table_says_why_a_trial_is_unstable_and_ranks_it_last(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = [0.0, 0.5]\n")
    done = _cli("tune", "--task", "sleep", "--hp", "sleep_s=0.0", "--max_epochs", "1", "--n_seeds", "1",
                "--n_folds", "2", "--accelerator", "cpu", "--hpconfig", str(space), "--sampler", "grid",
                "--n_trials", "2", "--artifact_dir", str(tmp_path), "--name", "zt")  # fmt: skip
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stdout.splitlines() if line.startswith("unstable #")]
    assert len(notes) == 1
    assert notes[0].startswith("unstable #2 zt-cv")
    assert notes[0].endswith("-run-f0s42: val/JaccardIndex=0 (and 1 more)")
    import polars as pl

    infos = pl.read_parquet(tmp_path / "zt" / "tune_infos.parquet")
    reasons = dict(zip(infos["value"].to_list(), infos["unstable_reason"].to_list(), strict=True))
    assert reasons[0.5] is None and reasons[0.0].endswith("val/JaccardIndex=0 (and 1 more)")


def test_a_dry_run_tune_prints_its_trials_and_run_counts(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = [0.25, 0.5]\nlr = 0.01\n")
    done = _cli("tune", "--task", "sleep", "--max_epochs", "1", "--n_seeds", "2", "--n_folds", "3",
                "--accelerator", "cpu", "--hpconfig", str(space), "--sampler", "grid", "--n_trials", "2",
                "--artifact_dir", str(tmp_path / "art"), "--name", "dry", "--dry_run")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "2 trials drawn by the grid sampler (seed 0):" in lines
    trials = sorted(line.split()[1:] for line in lines if line.startswith("  dry-cv"))
    assert trials == [["value=0.25", "6", "runs"], ["value=0.5", "6", "runs"]]
    same = next(line for line in lines if line.startswith("same in every trial:"))
    assert "lr=0.01" in same and "sleep_s=1.0" in same
    assert not (tmp_path / "art").exists()  # a dry run writes no tree
