"""Pruning between folds as pure functions: a trial's value after a fold against the others' (Optuna's median and
successive-halving rules, applied to cv folds)."""

from __future__ import annotations

import math
import statistics

from nestling.execute.search.trials import Trial

MEDIAN_STARTUP_TRIALS = 3  # median pruning starts once this many trials are complete (Optuna's n_startup_trials; its default is 5)
HALVING_RATE = 4  # successive halving keeps the best 1/4 at folds 1, 4, 16, ... (Optuna's default reduction factor)


def median_prunes(trial: Trial, step: int, complete: list[Trial]) -> bool:
    """Optuna's MedianPruner rule: after MEDIAN_STARTUP_TRIALS complete trials, stop a trial whose best score so
    far is below the median of the complete trials' scores at the same step."""
    if len(complete) < MEDIAN_STARTUP_TRIALS:
        return False
    best = max((v for s, v in trial.values.items() if s <= step), default=math.nan)
    if math.isnan(best):
        return True
    others = [t.values[step] for t in complete if step in t.values and math.isfinite(t.values[step])]
    return bool(others) and best < statistics.median(others)


def halving_prunes(value: float, step: int, competing: list[float], rate: int = HALVING_RATE) -> bool:
    """Asynchronous successive halving (Optuna's SuccessiveHalvingPruner with min_resource 1): at a rung
    (step = rate**r) a trial goes on only if its score is among the best 1/rate of every trial that reached the
    rung, itself included (the best one while fewer than `rate` did); between rungs it goes on."""
    rung = 1
    while rung < step:
        rung *= rate
    if rung != step:
        return False
    if math.isnan(value):
        return True
    ranked = sorted([v for v in competing if math.isfinite(v)] + [value], reverse=True)
    keep = max(1, len(ranked) // rate)
    return value < ranked[keep - 1]
