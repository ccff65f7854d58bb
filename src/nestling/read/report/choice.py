"""The tune page's section on the choice of the winner: how likely it is the best (`p_best`), how much its cv score
overstates its true score (the bootstrap optimism, read/selection.py), and, once the tune is retrained, the realised
gap between its cv score and its test score beside the estimate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nestling.core.lazy import lazy_module
from nestling.core.ml.bootstrap import N_RESAMPLES, P_BEST_UNCERTAIN
from nestling.core.tree import naming
from nestling.plan.store import load_plan
from nestling.read.collect import Collected, CvSummary
from nestling.read.report.html import num, para
from nestling.read.report.page import Section

if TYPE_CHECKING:
    import polars as pl
else:
    pl = lazy_module("polars")


@dataclass(frozen=True)
class RealisedGap:
    """A retrain of a trial: its cv score, its test score (mean over seeds) and the gap cv - test."""

    retrain: str
    cv_name: str
    cv_score: float
    test_score: float

    @property
    def gap(self) -> float:
        return self.cv_score - self.test_score


def realised_gaps(collected: Collected) -> list[RealisedGap]:
    """Every retrain of the tune that wrote its final_infos.parquet, with the cv score of the trial it retrained."""
    by_index = {cv.hp_index: cv for cv in collected.cvs}
    gaps = []
    for path in naming.final_infos_files(collected.plan.root):
        try:
            retrain = load_plan(path.parent)
            rows = {r["row"]: r.get("run_score") for r in pl.read_parquet(path).iter_rows(named=True)}
        except Exception:  # noqa: BLE001 - an older or damaged retrain: the retrain section shows what it can
            continue
        trial = by_index.get(retrain.cvs[0].hp_index) if retrain.cvs else None
        test = rows.get("mean")
        if trial is None or test is None or math.isnan(test) or math.isnan(trial.score):
            continue
        gaps.append(RealisedGap(path.parent.name, str(trial.cv_name), trial.score, float(test)))
    return gaps


def choice_section(collected: Collected, winner: CvSummary | None) -> Section | None:
    """None when no trial races (no complete, stable trial: nothing to say about the choice)."""
    if winner is None or math.isnan(winner.p_best):
        return None
    n_racing = sum(not math.isnan(cv.p_best) for cv in collected.cvs)
    parts = [para(
        f"{winner.cv_name} is the best of the {n_racing} complete, stable trials in {winner.p_best:.0%} of "
        f"{N_RESAMPLES:,} paired bootstrap resamples of the folds (p_best; the same folds drawn for every trial, "
        "seeded by --tune_seed)."
        + (" The choice is uncertain: more folds or seeds would tell the leaders apart." if
           winner.p_best < P_BEST_UNCERTAIN else "")
    )]  # fmt: skip
    if not math.isnan(collected.optimism):
        parts.append(para(
            f"Optimism of the winner: the best cv score overstates the chosen trial's true score by about "
            f"{num(collected.optimism)} (bootstrap estimate of the selection bias: on each resample, the resampled "
            f"winner's score minus its score on all folds); corrected, {num(winner.score - collected.optimism)}. "
            "Choosing the best of many noisy scores favours lucky ones (Cawley & Talbot 2010)."
        ))  # fmt: skip
    for gap in realised_gaps(collected):
        parts.append(para(
            f"Retrain {gap.retrain} of {gap.cv_name}: cv score {num(gap.cv_score)}, test score {num(gap.test_score)}: "
            f"realised gap cv - test {num(gap.gap)}"
            + (f" (estimated optimism {num(collected.optimism)})." if not math.isnan(collected.optimism) else ".")
            + " The test split is other data than the folds, so the gap also holds the difference between them."
        ))  # fmt: skip
    return Section("Choosing the winner: how sure, how optimistic", "".join(parts))
