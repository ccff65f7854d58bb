"""Respect the time limit (issue 23 §5): an array task takes over a waiting unit only when it can finish it before
its walltime, so that no run is cut by the time limit for a take-over (backfill also favours short, accurate limits).

A run is estimated at the 90th percentile of the durations of the launch's finished runs (up to SAMPLE of them, read
from the units other tasks claimed, asked again every REFRESH_S), else at --expected_run_s, else not at all (then
every waiting unit may be taken over, as before). The task's time left is its limit (--time_min), less the
--signal_delay_s before it that SLURM signals at, less SLURM_TICK_S (slurmctld signals on a 30-second timer tick,
so up to that much earlier), less the time since the task started. A unit fits when its runs' estimate x MARGIN
+ MARGIN_S does; one that does not is left for a fresh task.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from nestling.core.tree.array_claims import holders
from nestling.core.tree.naming import ArrayLaunchPaths
from nestling.core.tree.run_result import read_result

SAMPLE = 64
REFRESH_S = 30.0
SLURM_TICK_S = 30.0
MARGIN = 1.1  # a unit's estimate x this + MARGIN_S must fit: results, claims and the next run's set-up take time too
MARGIN_S = 10.0


def p90(values: list[float]) -> float | None:
    """The nearest-rank 90th percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


class Walltime:
    """The time a task has left, and whether a unit of runs fits into it."""

    def __init__(
        self,
        paths: ArrayLaunchPaths,
        units: list[list[str]],
        *,
        started: float,
        time_min: int,
        signal_delay_s: int,
        expected_run_s: float | None,
        parallel: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`parallel`: runs of a unit that run at once (--runs_per_gpu K packs K on the GPU)."""
        self.paths, self.units, self.clock = paths, units, clock
        self.deadline = started + time_min * 60 - signal_delay_s - SLURM_TICK_S
        self.expected_run_s, self.parallel = expected_run_s, max(1, parallel)
        self._estimate: float | None = None
        self._asked_at = -math.inf

    def left_s(self) -> float:
        return self.deadline - self.clock()

    def run_estimate(self) -> float | None:
        """Seconds one run takes: the p90 of the launch's finished runs, else --expected_run_s."""
        if self.clock() - self._asked_at > REFRESH_S:
            self._asked_at = self.clock()
            self._estimate = p90(self._durations()) or self.expected_run_s
        return self._estimate

    def fits(self, unit: int) -> tuple[bool, float | None]:
        """Whether unit `unit` can end before the time limit, and its estimated seconds (None: unknown, so it fits)."""
        per_run = self.run_estimate()
        if per_run is None:
            return True, None
        runs = [d for d in self.units[unit] if not os.path.exists(os.path.join(d, "run_result.json"))]
        needed = per_run * math.ceil(len(runs) / self.parallel)
        return needed * MARGIN + MARGIN_S <= self.left_s(), needed

    def _durations(self) -> list[float]:
        """Durations of finished runs of the units tasks claimed (those most likely done), at most SAMPLE."""
        out: list[float] = []
        for unit in sorted(holders(self.paths)):
            if unit >= len(self.units):
                continue
            for run_dir in self.units[unit]:
                result = read_result(Path(run_dir))
                if result is not None and isinstance(result.duration, (int, float)):
                    out.append(float(result.duration))
                if len(out) >= SAMPLE:
                    return out
        return out
