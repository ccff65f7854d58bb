"""Which trial is best, with the noise in view: each trial's `p_best` and the optimism of the winner, from the run
scores of a tune's complete, stable trials (the statistics are core/ml/bootstrap.py's).

Only complete, stable trials compete: each was scored on every fold, so their fold means pair up. A pruned, failed
or unstable trial has `p_best` NaN (its missing folds would make the comparison unpaired). The bootstrap is seeded
by the tune's `--tune_seed`, so a collect gives the same numbers every time."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from nestling.core.ml.bootstrap import bootstrap_selection
from nestling.core.tree.run_state import RunState
from nestling.execute.cv_table import CvSummary
from nestling.execute.search.trials import TrialState


@dataclass(frozen=True)
class TuneSelection:
    """The trials with `p_best` set (in their order), and the optimism of the winner by cv score (NaN: none)."""

    cvs: list[CvSummary]
    optimism: float


def competes(cv: CvSummary) -> bool:
    """A trial in the race for best: complete, stable, with a score."""
    return cv.state is TrialState.COMPLETE and not cv.score_is_unstable and math.isfinite(cv.score)


def fold_means(cv: CvSummary) -> dict[int, float]:
    """The mean run score of each fold over the cv's usable runs (its seeds, averaged)."""
    sums: dict[int, list[float]] = {}
    success = RunState.SUCCESS.value
    for fold, status, unstable, score in zip(
        cv.table.get_column("fold").to_list(), cv.table.get_column("status").to_list(),
        cv.table.get_column("is_unstable").to_list(), cv.table.get_column("run_score").to_list(), strict=True,
    ):  # fmt: skip
        if status == success and not unstable and score is not None and math.isfinite(score):
            sums.setdefault(int(fold), []).append(float(score))
    return {fold: math.fsum(v) / len(v) for fold, v in sorted(sums.items())}


def select(cvs: list[CvSummary], seed: int) -> TuneSelection:
    """`p_best` of every trial (NaN for those that do not compete) and the optimism of the winner."""
    racing = [i for i, cv in enumerate(cvs) if competes(cv)]
    means = {i: fold_means(cvs[i]) for i in racing}
    folds = sorted(set.intersection(*(set(m) for m in means.values()))) if means else []
    if not folds:
        return TuneSelection([dataclasses.replace(cv, p_best=math.nan) for cv in cvs], math.nan)
    chosen = bootstrap_selection([[means[i][f] for f in folds] for i in racing], seed)
    p_best = dict(zip(racing, chosen.p_best, strict=True))
    out = [dataclasses.replace(cv, p_best=p_best.get(i, math.nan)) for i, cv in enumerate(cvs)]
    return TuneSelection(out, chosen.optimism)
