"""run.execute and the worker on real (tiny, CPU) runs of the sleep task: attempts, preemption, results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nestling import jobenv
from nestling.folds import make_splits
from nestling.records import RunSpec
from nestling.tasks.sleep import SleepTask


def make_run(tmp_path: Path, name: str = "r", task: str = "sleep", **hparams: object) -> Path:
    """A run dir holding its run_spec.json, as a launcher leaves it for a worker."""
    splits = tmp_path / "splits.json"
    if not splits.exists():
        folds = make_splits(SleepTask().metadata(), fold_method="kfold", n_folds=2, fold_seed=42)
        splits.write_text(json.dumps([{"train": s.train, "val": s.val, "test": s.test} for s in folds]))
    run_dir = tmp_path / f"{name}-abcd1234"
    spec = RunSpec(
        run_name=name, run_id="abcd1234", run_dir=str(run_dir), cv_name=None, tune_name=None, fold=0, seed=0,
        hparams={"sleep_s": 0.0, **hparams}, task=task, splits_file=str(splits), max_epochs=1,
        early_stopping_patience=0, scoring_metric=["val/JaccardIndex", "val/Recall"],
        multi_score_strategy="geometric", accelerator="cpu", strategy="auto", devices=1, num_nodes=1,
    )  # fmt: skip
    run_dir.mkdir(parents=True)
    (run_dir / "run_spec.json").write_text(json.dumps(spec.to_dict()))
    return run_dir


def test_the_preemption_signal_reaches_the_run_in_progress_and_the_worker_exits_requeued(tmp_path: Path) -> None:
    run = make_run(tmp_path, sleep_s=60.0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "nestling.worker", str(run)], stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while not (run / "logs").exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # logs/ appears when fit starts: the run has registered its saver by then
    time.sleep(1.0)  # into the epoch's first sleep
    worker.send_signal(jobenv.PREEMPT_SIGNAL)
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == jobenv.EXIT_REQUEUED, stderr
    assert "signal in epoch 0: the next attempt resumes from the start" in stderr
    assert not (run / "run_result.json").exists()  # preempted, not finished
    assert jobenv.PREEMPT_SIGNAL == signal.SIGUSR2


def test_a_spec_written_with_the_old_attempt_field_still_loads(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    spec = RunSpec.load(run / "run_spec.json")
    assert "attempt" not in spec.to_dict()  # the attempt number lives in attempts.json, not in the spec
    assert RunSpec.from_dict({**spec.to_dict(), "attempt": 1}) == spec
