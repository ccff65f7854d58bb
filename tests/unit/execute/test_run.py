"""run.execute and the worker on real (tiny, CPU) runs of the sleep task: attempts, preemption, results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nestling.core.host import jobenv
from nestling.core.ml.folds import make_splits
from nestling.core.tree.atomic import read_json
from nestling.core.tree.run_spec import RunSpec
from nestling.tasks.sleep import SleepTask


def make_run(
    tmp_path: Path,
    name: str = "r",
    task: str = "sleep",
    scoring: tuple[str, ...] = ("val/JaccardIndex", "val/Recall"),
    **hparams: object,
) -> Path:
    """A run dir holding its run_spec.json, as a launcher leaves it for a worker (fold 0 of 2, with a test set)."""
    splits = tmp_path / "splits.json"
    if not splits.exists():
        folds = make_splits(
            SleepTask().metadata(), fold_method="kfold", n_folds=2, fold_seed=42, test_split="random"
        )
        splits.write_text(json.dumps([{"train": s.train, "val": s.val, "test": s.test} for s in folds]))
    run_dir = tmp_path / f"{name}-abcd1234"
    spec = RunSpec(
        run_name=name, run_id="abcd1234", run_dir=str(run_dir), cv_name=None, tune_name=None, fold=0, seed=0,
        hparams={"sleep_s": 0.0, **hparams}, task=task, splits_file=str(splits), max_epochs=1,
        early_stopping_patience=0, scoring_metric=list(scoring),
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
    spec = RunSpec.from_dict(read_json(run / "run_spec.json"))
    assert "attempt" not in spec.to_dict()  # the attempt number lives in attempts.json, not in the spec
    assert RunSpec.from_dict({**spec.to_dict(), "attempt": 1}) == spec


FAIL_IN_TEST = '''
from pathlib import Path

import pytest

from nestling.tasks.sleep import SleepTask


class FailTestWhileFlagged(SleepTask):
    """The sleep task whose test step fails while a flag file exists: a run that fails after training."""

    def default_hparams(self):
        return {**super().default_hparams(), "fail_test_flag": ""}

    def build_model(self, hparams):
        model = super().build_model(hparams)
        flag, plain = Path(str(model.hparams["fail_test_flag"])), model.test_step

        def test_step(batch, batch_idx):
            if flag.is_file():
                raise RuntimeError("injected failure in test")
            return plain(batch, batch_idx)

        model.test_step = test_step
        return model
'''


def test_a_run_that_failed_in_test_resumes_with_its_validation_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 #5 (and #15): attempt 2 restores last.ckpt at the final epoch, so fit trains and validates
    nothing; the run must still carry its validation metrics, and attempt 1's traceback moves aside."""
    from nestling.execute.run_attempt import execute

    (tmp_path / "fail_in_test_task.py").write_text(FAIL_IN_TEST)
    monkeypatch.syspath_prepend(str(tmp_path))
    flag = tmp_path / "fail-test"
    flag.touch()
    run = make_run(tmp_path, task="fail_in_test_task:FailTestWhileFlagged", fail_test_flag=str(flag))
    spec = RunSpec.from_dict(read_json(run / "run_spec.json"))

    first = execute(spec)
    assert first is not None and (first.status, first.attempt) == ("failed", 1)
    assert first.error == "RuntimeError: injected failure in test"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "injected failure in test" in (run / "error.txt").read_text()

    flag.unlink()
    second = execute(spec)
    assert second is not None and (second.status, second.attempt, second.error) == ("success", 2, None)
    metrics = second.metrics
    assert (metrics["val/JaccardIndex"], metrics["val/Recall"]) == (0.5, 0.5)  # the sleep task's constants
    assert (metrics["test/JaccardIndex"], metrics["test/Recall"]) == (0.5, 0.5)
    assert json.loads((run / "run_result.json").read_text())["metrics"] == metrics
    assert not (run / "error.txt").exists()  # no stale traceback beside a successful result
    assert "injected failure in test" in (run / "error.attempt-1.txt").read_text()


def test_a_run_without_every_scoring_metric_is_failed_not_success(tmp_path: Path) -> None:
    """Issue 12 #5: a result that cannot be scored is no success; the error names what is missing and what
    was logged."""
    from nestling.execute.run_attempt import execute

    run = make_run(tmp_path, scoring=("val/JaccardIndex", "val/F1Score"))  # the sleep task logs no F1Score
    result = execute(RunSpec.from_dict(read_json(run / "run_spec.json")))
    assert result is not None and result.status == "failed"
    assert result.error == (  # at the first validation's end, before Lightning's ModelCheckpoint would fail on it
        "MissingMetricError: the run logged no val/F1Score to score (it logged val/JaccardIndex, val/Recall, "
        "val/loss); log it in validation_step, or score on logged metrics: --scoring_metric val/JaccardIndex"
    )
    assert result.metrics == {}
    assert "MissingMetricError" in (run / "error.txt").read_text()


def test_worker_startup_is_recorded_once_and_not_in_the_first_runs_duration(tmp_path: Path) -> None:
    """Issue 12 #9: the first run of a fresh worker paid the torch + Lightning import inside its duration."""
    first, second = make_run(tmp_path, "one"), make_run(tmp_path, "two")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "nestling.worker", str(first), str(second)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    one, two = (json.loads((d / "run_result.json").read_text()) for d in (first, second))
    assert (one["status"], two["status"]) == ("success", "success")
    startup = one["worker_startup_s"]
    assert startup > 1.0  # importing torch and Lightning takes seconds
    assert two["worker_startup_s"] is None  # a warm worker pays nothing
    # Identical runs: the first may be somewhat slower (first-use caches), but not by the import.
    assert one["duration"] < two["duration"] + startup / 2, (one["duration"], two["duration"], startup)


@pytest.mark.parametrize(("score_epoch", "expected"), [("last", 0.4), ("best", 0.9)])
def test_score_epoch_chooses_whose_metrics_are_scored(tmp_path: Path, score_epoch: str, expected: float) -> None:
    """--score_epoch last (the default) scores the last epoch; best scores the epoch best.ckpt comes from."""
    from nestling.execute.run_attempt import execute

    run = make_run(tmp_path, task="_epoch_task:EpochTask", scoring=("val/JaccardIndex",))
    spec = read_json(run / "run_spec.json")
    spec.update(max_epochs=3, score_epoch=score_epoch)
    result = execute(RunSpec.from_dict(spec))
    assert result is not None and result.status == "success", result
    assert result.metrics["val/JaccardIndex"] == pytest.approx(expected)
