"""A run paused at rungs and promoted (run_attempt.execute with until_epoch, as --pruner asha|hyperband drives it)
on real, tiny CPU runs: it continues exactly where it paused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_run import make_run  # the sibling module, by the name pytest imports it under

from nestling.core.tree.atomic import read_json
from nestling.core.tree.run_epochs import StopReason, read_curve
from nestling.core.tree.run_spec import RunSpec
from nestling.core.tree.run_state import RunState
from nestling.execute.run_attempt import execute


def _spec(run: Path, max_epochs: int) -> RunSpec:
    return dataclasses.replace(RunSpec.from_dict(read_json(run / "run_spec.json")), max_epochs=max_epochs)


def test_a_promoted_run_continues_its_epochs_schedule_log_and_attempt(tmp_path: Path) -> None:
    straight = _spec(make_run(tmp_path, "s", task="_scheduled_task:ScheduledTask", scoring=("val/JaccardIndex",)), 5)
    paused = _spec(make_run(tmp_path, "p", task="_scheduled_task:ScheduledTask", scoring=("val/JaccardIndex",)), 5)
    whole = execute(straight)
    assert whole is not None and whole.status is RunState.SUCCESS and whole.stop_reason is StopReason.COMPLETED
    results = [execute(paused, until_epoch=until) for until in (1, 3, None)]
    assert [(r.epochs_trained, r.stop_reason, r.attempt) for r in results if r] == [
        (1, StopReason.PAUSED, 1), (3, StopReason.PAUSED, 1), (5, StopReason.COMPLETED, 1)
    ]  # fmt: skip
    assert execute(paused, until_epoch=3) == results[-1]  # a finished run is never trained again
    rates = [round(e["lr"], 9) for e in read_curve(paused.run_dir)]
    assert rates == [round(e["lr"], 9) for e in read_curve(straight.run_dir)]  # the cosine over all 5 epochs
    assert rates[0] == pytest.approx(0.1) and len(set(rates)) == 5
    log = Path(paused.run_dir) / "logs" / "attempt-1" / "metrics.csv"
    rows = log.read_text().splitlines()
    epochs = [int(r.split(",")[0]) for r in rows[1:] if r.split(",")[rows[0].split(",").index("lr")]]
    assert epochs == [0, 1, 2, 3, 4] and not (Path(paused.run_dir) / "logs" / "attempt-2").exists()
    first, last = results[0], results[-1]
    assert first is not None and last is not None and last.duration > first.duration  # the segments' time, summed
