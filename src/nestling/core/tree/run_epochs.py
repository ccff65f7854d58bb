"""How far a run trained: its epochs, why it stopped, and its learning curve (`curve.json`).

`run_result.json` says `epochs_trained` and `stop_reason`; a run paused at a rung (--pruner asha|hyperband) has a
result with status success and stop reason `paused`, which a promotion replaces when the run goes on. `curve.json`
holds the metrics after every epoch (written by rank 0 at each epoch end, atomically), for the report's learning
curves; an epoch trained again after a kill replaces its entry, so the curve never holds an epoch twice.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling.core.tree.atomic import write_json
from nestling.core.tree.naming import RUN_CURVE
from nestling.core.tree.run_result import RunResult
from nestling.core.tree.run_state import RunState
from nestling.core.tree.stop_reason import StopReason

__all__ = ["RunEpochs", "StopReason", "read_curve", "record_epoch", "run_epochs"]


@dataclass(frozen=True)
class RunEpochs:
    """What a run's result says about its epochs. `final`: it trains no further (completed, stopped early, or
    failed); a paused run, or one without a result, may."""

    epochs_trained: int
    stop_reason: StopReason | None
    status: RunState | None

    @property
    def final(self) -> bool:
        if self.status == RunState.FAILED:
            return True
        return self.status == RunState.SUCCESS and self.stop_reason != StopReason.PAUSED

    @property
    def paused(self) -> bool:
        return self.status == RunState.SUCCESS and self.stop_reason == StopReason.PAUSED


def run_epochs(result: RunResult | None) -> RunEpochs:
    """From a run result (None: the run has none yet). A result written before runs recorded their epochs counts
    as completed: it trained every epoch it was going to."""
    if result is None:
        return RunEpochs(0, None, None)
    stop = result.stop_reason
    if stop is None and result.status == RunState.SUCCESS:
        stop = StopReason.COMPLETED
    return RunEpochs(int(result.epochs_trained or 0), stop, result.status)


def read_curve(run_dir: Path | str) -> list[dict[str, Any]]:
    """The run's epochs in order, each {"epoch": e, metric: value, ...}; [] when the run recorded none."""
    try:
        with open(os.path.join(run_dir, RUN_CURVE), "rb") as f:
            data = json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return []
    epochs = data.get("epochs") if isinstance(data, dict) else None
    return [e for e in epochs if isinstance(e, dict) and "epoch" in e] if isinstance(epochs, list) else []


def record_epoch(
    run_dir: Path | str, epoch: int, metrics: dict[str, float], previous: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Write the curve with `epoch` (0-based) set to `metrics`; entries from `epoch` on that an earlier attempt
    left (it trained past the checkpoint this attempt resumed from) are dropped. Returns the new curve."""
    kept = [e for e in previous if int(e["epoch"]) < epoch]
    clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    curve = [*kept, {"epoch": epoch, **clean}]
    write_json(Path(run_dir) / RUN_CURVE, {"epochs": curve}, compact=True)
    return curve
