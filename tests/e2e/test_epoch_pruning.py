"""Pruning between epochs from the command line (issue 22), with real Lightning training: the bowl task counting
its epochs from the task's side (testing/counting_task.py), so "no epoch trained twice" is checked where the
training happens, across pauses, promotions, a killed worker, Ctrl-C and --resume, and under DDP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from support import cli, poll

from nestling.core.tree import naming
from nestling.tasks.bowl import true_value
from nestling.testing.counting_task import counted_epochs

TASK = "nestling.testing.counting_task:CountingBowlTask"
SPACE = """
[hyperparameters]
lr = {distribution = "loguniform", low = 1e-4, high = 0.1}
width = {low = 0.0, high = 0.6}
"""


def _args(tmp_path: Path, name: str, *extra: str) -> list[str]:
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    return ["--task", TASK, "--hpconfig", str(space), "--n_seeds", "1", "--max_epochs", "9", "--accelerator", "cpu",
            "--artifact_dir", str(tmp_path / "art"), "--name", name, "--quiet", "--tune_seed", "3", *extra]  # fmt: skip


def _runs(root: Path) -> list[Path]:
    plan = json.loads((root / naming.PLAN).read_text())
    return [root / r["dir"] for cv in plan["cvs"] for r in cv["runs"]]


def _result(run: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run / naming.RUN_RESULT).read_text())


def _check_every_epoch_once(root: Path, ranks: int = 1) -> int:
    """Every run trained epochs 0..epochs_trained-1, each once, on every rank (from the task's side); the total."""
    total = 0
    for run in _runs(root):
        trained = _result(run)["epochs_trained"]
        counted = counted_epochs(run)
        assert sorted(counted) == list(range(ranks)), (run.name, counted)
        for rank, epochs in counted.items():
            assert epochs == list(range(trained)), (run.name, rank, epochs, trained)
        total += trained
    return total


def _decided(root: Path) -> pl.DataFrame:
    table = pl.read_parquet(root / naming.TUNE_INFOS).sort("hp_index")
    assert set(table["state"].to_list()) <= {"complete", "pruned"}, table["state"].to_list()
    return table


def test_serial_asha_trains_at_most_half_the_epochs_and_chooses_as_well(tmp_path: Path) -> None:
    """The same 6 configurations (random, one seed) with --pruner none and asha, 2 folds x 9 epochs: asha trains at
    most half the epochs, each once, picks a configuration as good, and the tables, status and report say so."""
    none = cli("tune", *_args(tmp_path, "none", "--n_trials", "6", "--n_folds", "2"))
    asha = cli("tune", *_args(tmp_path, "asha", "--n_trials", "6", "--n_folds", "2", "--pruner", "asha"))
    assert none.returncode == 0 and asha.returncode == 0, none.stderr + asha.stderr
    full = _check_every_epoch_once(tmp_path / "art" / "none")
    pruned = _check_every_epoch_once(tmp_path / "art" / "asha")
    assert full == 6 * 2 * 9 and pruned <= full / 2
    table, baseline = _decided(tmp_path / "art" / "asha"), _decided(tmp_path / "art" / "none")
    assert table["n_epochs_done"].sum() == pruned and baseline["n_epochs_done"].sum() == full
    hparams = ["lr", "width", "depth"]
    chosen = table.filter(pl.col("state") == "complete").sort("score", descending=True).row(0, named=True)
    best = baseline.sort("score", descending=True).row(0, named=True)
    assert true_value({k: chosen[k] for k in hparams}) >= true_value({k: best[k] for k in hparams}) - 0.005
    assert table["rung"].max() == 2 and table["bracket"].to_list() == [0] * 6  # rungs at 1, 3, 9 epochs
    runs = pl.read_parquet(tmp_path / "art" / "asha" / naming.RUN_INFOS)
    assert set(runs["stop_reason"].to_list()) == {"completed", "pruned"}
    assert runs.filter(pl.col("stop_reason") == "completed")["epochs_trained"].unique().to_list() == [9]
    counts = json.loads(cli("status", str(tmp_path / "art" / "asha"), "--json").stdout)["counts"]
    assert counts["paused"] == 0 and counts["success"] + counts["pruned"] == 12
    page = (tmp_path / "art" / "asha" / "report.html").read_text()
    assert 'id="fig-learning-curves"' in page and "rung at epoch 3" in page
    for run in _runs(tmp_path / "art" / "asha"):  # a promoted run is one attempt, its CSV log continued
        rows = (run / "logs" / "attempt-1" / "metrics.csv").read_text().splitlines()[1:]
        epochs = sorted({int(r.split(",")[0]) for r in rows})
        assert epochs == list(range(_result(run)["epochs_trained"])) and _result(run)["attempt"] == 1


def test_hyperband_on_the_tune_parallel_pool_decides_every_trial_once(tmp_path: Path) -> None:
    """Two workers side by side (tune-parallel), one fold: the free worker takes promotions, neither trains an
    epoch twice, every bracket completes a trial."""
    done = cli("tune", *_args(tmp_path, "hb", "--n_trials", "8", "--fold_method", "none", "--pruner", "hyperband",
                              "--strategy", "tune-parallel", "--devices", "2"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = tmp_path / "art" / "hb"
    total = _check_every_epoch_once(root)
    table = _decided(root)
    assert sorted(set(table["bracket"].to_list())) == [0, 1, 2]  # rungs (1, 3, 9), (3, 9), (9,)
    for bracket in (0, 1, 2):
        assert "complete" in table.filter(pl.col("bracket") == bracket)["state"].to_list()
    assert total < 8 * 9
    logs = "".join(p.read_text() for p in (root / "_workers").glob("*.log"))
    assert "Traceback" not in logs


def test_ddp_ranks_stop_together_at_every_rung(tmp_path: Path) -> None:
    """--strategy ddp --devices 2 on CPU: both ranks train the same epochs, stop at the rung together, and the
    runs go on from there when promoted; nothing hangs (the CLI returns)."""
    done = cli("tune", *_args(tmp_path, "ddp", "--n_trials", "3", "--fold_method", "none", "--max_epochs", "3",
                              "--pruner", "asha", "--strategy", "ddp", "--devices", "2"), timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = tmp_path / "art" / "ddp"
    _check_every_epoch_once(root, ranks=2)
    table = _decided(root)
    assert table["rung"].max() == 1 and table["n_epochs_done"].sum() == 3 * 1 + 2  # 3 at epoch 1, one goes on to 3
    assert {_result(run)["world_size"] for run in _runs(root)} == {2}


def _promotion_past_its_first_epoch(root: Path) -> Path | None:
    """A run that paused at a rung and trains again (promoted; its lock is held), an epoch past the pause."""
    for run in _runs(root) if (root / naming.PLAN).exists() else []:
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            paused = _result(run)
            promoted = paused["stop_reason"] == "paused" and (run / naming.RUN_LOCK).exists()
            if promoted and len(counted_epochs(run).get(0, [])) > paused["epochs_trained"]:
                return run
    return None


def _lock_pid(run: Path) -> int | None:
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        return int(json.loads((run / naming.RUN_LOCK).read_text())["pid"])
    return None


def test_a_worker_killed_in_a_promotion_ctrl_c_and_resume_train_no_epoch_twice(tmp_path: Path) -> None:
    """SIGKILL the worker while it trains a promoted run: the pool goes on, and the promotion (a decision in the
    tree) is trained from its checkpoint as a new attempt. Then Ctrl-C: runs wait at their rungs (`paused` in
    nestling status); --resume decides and trains the rest. Every epoch is trained once (from the task's side)."""
    args = _args(tmp_path, "k", "--n_trials", "6", "--fold_method", "none", "--pruner", "asha", "--hp", "sleep_s=0.5")
    driver = subprocess.Popen([sys.executable, "-m", "nestling.cli", "tune", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    root = tmp_path / "art" / "k"
    try:
        victim = poll(lambda: _promotion_past_its_first_epoch(root), 240, "a promoted run an epoch into training")
        pid = _lock_pid(victim)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        poll(lambda: _lock_pid(victim) not in (None, pid), 240, "the killed promotion trained again")
        driver.send_signal(signal.SIGINT)  # while it trains again: it saves and stops, the rest waits
        out, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    status = json.loads(cli("status", str(root), "--json").stdout)
    assert driver.returncode == 130, err
    assert status["counts"]["paused"] > 0 and status["counts"]["lost"] == 0, status["counts"]
    first = json.loads((root / naming.LAUNCH).read_text())["launches"][0]
    assert first["lost_runs"] == [str(victim)]  # the run the killed worker trained; its unit's others went on
    resumed = cli("tune", "--resume", "k", "--artifact_dir", str(tmp_path / "art"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    _decided(root)
    _check_every_epoch_once(root)
    assert _result(victim)["attempt"] >= 2  # the kill ended attempt 1; the next resumed from its checkpoint
    final = json.loads(cli("status", str(root), "--json").stdout)["counts"]
    assert final["paused"] == 0 and final["success"] + final["pruned"] == 6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--min_epochs", "20"), "--min_epochs 20 is larger than --max_epochs 9"),
        (("--reduction_factor", "1"), "--reduction_factor 1 must be at least 2"),
    ],
)
def test_bad_rungs_are_refused_with_exit_2_and_nothing_written(tmp_path: Path, extra: tuple[str, ...],
                                                               message: str) -> None:  # fmt: skip
    done = cli("tune", *_args(tmp_path, "bad", "--pruner", "hyperband", *extra))
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "art").exists() or not any((tmp_path / "art").iterdir())
