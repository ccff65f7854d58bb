"""The states a run can be in, one `StrEnum` (as Optuna's `TrialState`): the strings run_result.json, the parquet
tables, the worker protocol and `nestling status --json` carry, with the rules readers ask about in one place.

Who says which:
  run_result.json       SUCCESS, FAILED (what an attempt ended with; the only states written into a run dir)
  run_infos.parquet     the above, or MISSING (no result: not run yet, running or lost)
  a worker's reply      the above, or SKIPPED (another live attempt holds the run), NOT_STARTED (fail-fast held it
                        back), PRUNED (its trial was stopped after an earlier fold, or at a rung), PAUSED (it trained to
                        a rung and waits for its trial's promotion: a success whose result says stop_reason paused); a
                        launcher adds LOST (the worker died with it)
  nestling status       SUCCESS, FAILED, RUNNING, PENDING, LOST, BLOCKED, NOT_STARTED, INTERRUPTED, PRUNED, PAUSED
                        (the tree plus the queue)
"""

from __future__ import annotations

from nestling.core.tree.recorded_enum import RecordedEnum


class RunState(RecordedEnum):
    SUCCESS = "success"
    FAILED = "failed"
    RUNNING = "running"
    PENDING = "pending"
    LOST = "lost"
    BLOCKED = "blocked"
    NOT_STARTED = "not started"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"
    MISSING = "missing"
    SKIPPED = "skipped"
    PAUSED = "paused"

    def is_recorded(self) -> bool:
        """A state run_result.json holds: the attempt ended and wrote its result (a cv whose every run has one is
        complete)."""
        return self in _RECORDED

    def is_active(self) -> bool:
        """Something will move the run on without anyone acting: a live attempt, or a queued job that will start it
        (`nestling status --watch` waits for these)."""
        return self in _ACTIVE

    def is_queued(self) -> bool:
        """A job in the queue holds the run, whether it will start or not (`--resume` refuses while one does)."""
        return self in _QUEUED

    def is_settled(self) -> bool:
        """Nothing is left to do for the run: a success, or a run its trial's pruning stopped on purpose. `--resume`
        reruns every other run; `nestling status` lists only the others unless --all."""
        return self in _SETTLED


_RECORDED = frozenset({RunState.SUCCESS, RunState.FAILED})
_ACTIVE = frozenset({RunState.RUNNING, RunState.PENDING})
_QUEUED = frozenset({RunState.PENDING, RunState.BLOCKED})
_SETTLED = frozenset({RunState.SUCCESS, RunState.PRUNED})
# The states `nestling status` counts, in the order it prints them.
STATUS_STATES = (
    RunState.SUCCESS, RunState.FAILED, RunState.RUNNING, RunState.PENDING, RunState.LOST, RunState.BLOCKED,
    RunState.NOT_STARTED, RunState.INTERRUPTED, RunState.PRUNED, RunState.PAUSED,
)  # fmt: skip
