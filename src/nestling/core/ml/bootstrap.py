"""Choosing among trials with the noise in view: the probability that each trial is the best, and how much the
winner's cv score overstates its true score, by one paired bootstrap over folds.

Every trial was scored on the same folds, so the folds are resampled once per resample and the same draw is used for
every trial (paired): a fold that is easy for all trials lifts them all, and does not decide which one wins. On each
resample the trial with the highest mean wins (ties share the win); `p_best` is each trial's share of the wins.

The optimism of the winner is the bootstrap estimate of the selection bias (Efron & Tibshirani 1993, ch. 10; for
model selection Tibshirani & Tibshirani 2009): on each resample, the resampled winner's resampled mean minus the
same trial's mean over all folds; its average over the resamples estimates how much "the best cv score" is above
the chosen trial's true score (Cawley & Talbot 2010: of the size of the differences between learning algorithms).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nestling.core.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

N_RESAMPLES = 2000  # the spread of p_best from the resampling itself: at most 0.5 / sqrt(2000) ~ 0.011
P_BEST_UNCERTAIN = 0.5  # a winner less likely than this to be the best is an uncertain choice


@dataclass(frozen=True)
class Selection:
    """`p_best` per trial (aligned with the input; sums to 1), and the optimism of the winner (NaN with no trial)."""

    p_best: list[float]
    optimism: float


def bootstrap_selection(
    fold_means: Sequence[Sequence[float]], seed: int, n_resamples: int = N_RESAMPLES
) -> Selection:
    """`fold_means[t][f]`: trial t's mean score on fold f (higher is better), every value finite and every trial
    on the same folds. Resamples the folds `n_resamples` times with a generator seeded by `seed`."""
    if not fold_means:
        return Selection([], math.nan)
    scores = np.asarray(fold_means, dtype=float)
    n_folds = scores.shape[1]
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_folds, size=(n_resamples, n_folds))
    counts = np.stack([np.bincount(row, minlength=n_folds) for row in drawn])  # resample x fold: times drawn
    means = scores @ counts.T / n_folds  # trial x resample
    best = means.max(axis=0)
    wins = means == best
    share = wins / wins.sum(axis=0)  # ties share the win
    p_best = share.mean(axis=1)
    full = scores.mean(axis=1)
    optimism = float(np.mean(best - (share * full[:, None]).sum(axis=0)))
    return Selection([float(p) for p in p_best], optimism)
