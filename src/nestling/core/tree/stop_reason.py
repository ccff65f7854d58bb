"""Why a run's training ended (run_result.json's and run_infos' `stop_reason`), one `StrEnum` as the run states."""

from __future__ import annotations

from enum import StrEnum


class StopReason(StrEnum):
    """All its epochs, early stopping, a pause at a rung (--pruner asha|hyperband), or its trial was pruned there
    (`pruned` is never in a result: the collector derives it from the trial's prune mark)."""

    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    PAUSED = "paused"
    PRUNED = "pruned"

    @classmethod
    def named(cls, value: object) -> StopReason | None:
        """The reason a string names (a result of another version may name one this version lacks: None)."""
        return _REASON_NAMED.get(value) if isinstance(value, str) else None


_REASON_NAMED = {reason.value: reason for reason in StopReason}
