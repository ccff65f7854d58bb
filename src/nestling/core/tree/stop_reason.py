"""Why a run's training ended (run_result.json's and run_infos' `stop_reason`), one `StrEnum` as the run states."""

from __future__ import annotations

from nestling.core.tree.recorded_enum import RecordedEnum


class StopReason(RecordedEnum):
    """All its epochs, early stopping, a pause at a rung (--pruner asha|hyperband), or its trial was pruned there
    (`pruned` is never in a result: the collector derives it from the trial's prune mark)."""

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    PAUSED = "paused"
    PRUNED = "pruned"
