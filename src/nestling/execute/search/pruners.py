"""Pruning between folds as pure functions: a trial's value after a fold against the others' (Optuna's median,
successive-halving and Wilcoxon rules, applied to cv folds). `prunes` is the one dispatch: the study asks it during
a tune (study.py) and `nestling replay` asks it over a finished tune (commands/replay.py), so both decide alike."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from nestling.core.lazy import lazy_module
from nestling.core.options.choices import FOLD_PRUNERS
from nestling.execute.search.trials import Trial, TrialState

if TYPE_CHECKING:
    import scipy.stats as scipy_stats
else:
    scipy_stats = lazy_module("scipy.stats")

MEDIAN_STARTUP_TRIALS = 3  # median pruning starts once this many trials are complete (Optuna's n_startup_trials; its default is 5)
HALVING_RATE = (
    4  # successive halving keeps the best 1/4 at folds 1, 4, 16, ... (Optuna's default reduction factor)
)
WILCOXON_P_THRESHOLD = 0.1  # Optuna's WilcoxonPruner default p_threshold
WILCOXON_STARTUP_STEPS = 2  # ... and n_startup_steps: at least two paired folds before a test


def prunes(pruner: str, trial: Trial, step: int, others: list[Trial]) -> bool:
    """Whether `trial`, `step` folds done, stops here under `pruner`, given the other trials as the tree holds them
    now (`others`: every other drawn trial, any state). `trial.values` must hold the step."""
    if pruner not in FOLD_PRUNERS or step < 1 or trial.n_folds_done < step:
        return False  # none, or a pruner between epochs (rungs.py decides those)
    if pruner == "median":
        return median_prunes(trial, step, [t for t in others if t.state is TrialState.COMPLETE])
    if pruner == "wilcoxon":
        return wilcoxon_prunes(trial, step, best_complete(others))
    return halving_prunes(trial.values[step], step, [t.values[step] for t in others if step in t.values])


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


# -- pruning between epochs: asynchronous successive halving (ASHA) and Hyperband --------------------------------
# A trial's runs train to a rung, pause there (last.ckpt kept), and go on to the next rung only when the trial is
# among the best 1/eta of the trials that reached the rung (see execute/search/rungs.py for the protocol).


def n_brackets(min_epochs: int, eta: int, max_epochs: int) -> int:
    """Hyperband's brackets: floor(log_eta(max_epochs / min_epochs)) + 1 (Optuna's and the paper's s_max + 1)."""
    count, epochs = 0, min_epochs
    while epochs <= max_epochs:
        count += 1
        epochs *= eta
    return max(1, count)


def rung_epochs(min_epochs: int, eta: int, max_epochs: int, bracket: int = 0) -> tuple[int, ...]:
    """The epochs at which a trial of `bracket` is compared: min_epochs * eta^(bracket + k) below max_epochs, then
    max_epochs itself (the last rung: the trial is complete). Bracket 0 is ASHA; the last bracket of Hyperband has
    only the last rung (no pruning) when max_epochs / min_epochs is a power of eta."""
    rungs = []
    epochs = min_epochs * eta**bracket
    while epochs < max_epochs:
        rungs.append(epochs)
        epochs *= eta
    return (*rungs, max_epochs)


def bracket_shares(brackets: int, eta: int) -> list[int]:
    """Trials per bracket in Hyperband's proportions (Optuna's HyperbandPruner: ceil(B * eta^s / (s + 1)) for
    bracket B - 1 - s): the aggressive brackets get more trials, as their trials cost fewer epochs each."""
    return [math.ceil(brackets * eta ** (brackets - 1 - b) / (brackets - b)) for b in range(brackets)]


def bracket_sequence(n_trials: int, brackets: int, eta: int) -> list[int]:
    """The bracket of each trial index: the shares interleaved (each trial goes to the bracket furthest behind
    its share), so that the first trials of a tune already cover every bracket. Deterministic: a resumed or
    distributed tune puts every trial in the same bracket."""
    if brackets <= 1:
        return [0] * n_trials
    shares = bracket_shares(brackets, eta)
    total = sum(shares)
    counts = [0] * brackets
    out = []
    for i in range(n_trials):
        behind = [(i + 1) * share / total - counts[b] for b, share in enumerate(shares)]
        chosen = max(range(brackets), key=lambda b: (behind[b], -b))
        counts[chosen] += 1
        out.append(chosen)
    return out


def _rank(value: float, values: list[float]) -> int:
    """1 for the best; NaN (no score) ranks after every number; ties share the better rank."""
    if math.isnan(value):
        return 1 + sum(1 for v in values if not math.isnan(v))
    return 1 + sum(1 for v in values if not math.isnan(v) and v > value)


def rung_quota(n_reached: int, n_possible: int, eta: int) -> int:
    """How many of the trials at a rung go on: the best floor(n / eta) of those that reached it (ASHA); once no
    other trial can still reach the rung, at least the best one, so that every bracket completes a trial."""
    quota = n_reached // eta
    if n_reached and n_possible <= n_reached:
        return max(1, quota)
    return quota


def promotes(value: float, at_rung: list[float], n_possible: int, eta: int) -> bool:
    """ASHA's promotion rule: the trial (its value among `at_rung`, every value at the rung, its own included) is
    among the best rung_quota of them. `n_possible`: the trials that reached the rung or still may."""
    return _rank(value, at_rung) <= rung_quota(len(at_rung), n_possible, eta)


def never_promotes(value: float, at_rung: list[float], n_possible: int, eta: int) -> bool:
    """The trial can never be promoted from this rung: trials arriving later only push it down, and at most
    max(1, n_possible // eta) of the rung go on. Then it is pruned now rather than left paused."""
    return _rank(value, at_rung) > max(1, n_possible // eta)
def best_complete(trials: list[Trial]) -> Trial | None:
    """The best complete trial by its cv score (Optuna's `study.best_trial`: the first of equal ones), or None."""
    complete = [t for t in trials if t.state is TrialState.COMPLETE and math.isfinite(t.score)]
    return max(sorted(complete, key=lambda t: t.index), key=lambda t: t.score, default=None)


def wilcoxon_prunes(trial: Trial, step: int, best: Trial | None, p_threshold: float = WILCOXON_P_THRESHOLD,
                    n_startup_steps: int = WILCOXON_STARTUP_STEPS) -> bool:  # fmt: skip
    """Optuna's WilcoxonPruner rule (optuna 5.1, maximising), with the folds as its problem instances: the trial's
    fold scores so far are paired with the best complete trial's on the same folds, and a one-sided Wilcoxon
    signed-rank test (zero_method "zsplit") asks whether the trial is worse; it stops when p < `p_threshold`,
    unless its mean so far is at least the best trial's mean (Optuna's safety). No test before `n_startup_steps`
    (at least two) paired folds, nor when a fold score of either trial is not a number."""
    mine = {s: v for s, v in trial.fold_scores.items() if s <= step}
    if not mine or best is None or not best.fold_scores:
        return False
    if not all(math.isfinite(v) for v in mine.values()) or not all(
        math.isfinite(v) for v in best.fold_scores.values()
    ):
        return False
    common = sorted(set(mine) & set(best.fold_scores))
    diffs = [mine[s] - best.fold_scores[s] for s in common]
    if len(diffs) < max(2, n_startup_steps):
        return False
    average_is_best = math.fsum(best.fold_scores.values()) / len(best.fold_scores) <= math.fsum(
        mine.values()
    ) / len(mine)
    p = float(scipy_stats.wilcoxon(diffs, alternative="less", zero_method="zsplit").pvalue)
    if p < p_threshold and average_is_best:
        return False
    return p < p_threshold
