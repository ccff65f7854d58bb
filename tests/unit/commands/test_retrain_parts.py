"""The parts of `nestling retrain` that need no training: test metric names, the retrain split, the epoch count
from the cv runs' CSV logs (issue 14 §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestling.commands.retrain import as_test_metric, best_epoch, retrain_epochs, retrain_split
from nestling.core.errors import UsageError
from nestling.core.ml.task import Split
from nestling.core.options.config import parse_config
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_json
from nestling.plan.model import CvPlan, PlannedRun


def test_test_metric_names() -> None:
    assert as_test_metric("val/JaccardIndex") == "test/JaccardIndex"
    assert as_test_metric("val/loss:lower") == "test/loss:lower"
    assert as_test_metric("val_acc:higher") == "test_acc:higher"
    assert as_test_metric("validation/f1") == "test/f1"
    with pytest.raises(UsageError, match="'acc' is not a validation metric"):
        as_test_metric("acc")


def test_retrain_split_is_every_non_test_sample() -> None:
    splits = [Split(["a", "b"], ["c"], ["t1", "t2"]), Split(["a", "c"], ["b", "d"], ["t1", "t2"])]
    assert retrain_split(splits) == Split(["a", "b", "c", "d"], [], ["t1", "t2"])
    assert retrain_split([Split(["a"], ["b"], [])]).test == []


def _run(tmp: Path, name: str, rows: dict[int, list[tuple[int, float]]], status: str = "success") -> PlannedRun:
    """A run dir with one CSV log per attempt: (epoch, val/loss) rows, plus train-only rows without the metric."""
    run_dir = tmp / name
    for attempt, values in rows.items():
        log = naming.RunPaths(run_dir).logs / f"attempt-{attempt}" / "metrics.csv"
        log.parent.mkdir(parents=True)
        lines = ["epoch,step,train/loss,val/loss"]
        for epoch, value in values:
            lines += [f"{epoch},{epoch},0.5,", f"{epoch},{epoch},,{value}"]
        log.write_text("\n".join(lines) + "\n")
    write_json(naming.RunPaths(run_dir).result, {"status": status})
    return PlannedRun(name, "abcdefgh", 0, 42, run_dir)


def test_best_epoch_reads_every_attempt_and_keeps_the_first_best(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", {1: [(0, 0.9), (1, 0.4)], 2: [(2, 0.4), (3, 0.6)]})
    assert best_epoch(run.dir, "val/loss", higher=False) == 1
    assert best_epoch(run.dir, "val/loss", higher=True) == 0
    assert best_epoch(run.dir, "val/acc", higher=True) is None


def test_retrain_epochs_best_is_the_median_of_best_epochs_plus_one(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path, "a", {1: [(0, 0.5), (1, 0.3), (2, 0.4)]}),  # best epoch 1 -> 2 epochs
        _run(tmp_path, "b", {1: [(0, 0.5), (1, 0.4), (2, 0.3), (3, 0.2)]}),  # 4 epochs
        _run(tmp_path, "c", {1: [(0, 0.1)]}, status="failed"),  # not counted
    ]
    cv = CvPlan("t-cv0", 0, {}, tmp_path, runs)
    config = parse_config(["--scoring_metric", "val/loss:lower", "--max_epochs", "9"])
    assert retrain_epochs("best", cv, config).count == 3  # median(2, 4)
    assert retrain_epochs("max", cv, config).count == 9
    assert retrain_epochs("5", cv, config).count == 5
    assert retrain_epochs("best", CvPlan("x", 0, {}, tmp_path, [runs[2]]), config).count == 9  # no logs: max
    for bad in ("0", "many", "-1"):
        with pytest.raises(UsageError, match="--retrain_epochs"):
            retrain_epochs(bad, cv, config)
