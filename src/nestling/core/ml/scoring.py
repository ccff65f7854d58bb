"""One number per run and per cross-validation, so tunes can rank hyperparameter sets.

Scoring metrics are given as ``"name"``, ``"name:higher"`` or ``"name:lower"`` (no suffix means higher is
better). A score is always higher-is-better, so every ranking sorts it the same way.

With ONE scoring metric the run score is its value v, or ``-v`` for a ``:lower`` metric: a loss ranks by the
loss itself, whatever its sign (a log-likelihood loss, a negative error offset), and every strategy gives this.

With several metrics m_1..m_n, each raw value v_i enters as

    x_i = v_i        if m_i is higher-is-better
    x_i = 1 / v_i    if m_i is lower-is-better (only meaningful for v_i > 0)

and the run score combines them with the multi-score strategy:

    geometric   (x_1 * ... * x_n) ** (1 / n)
    harmonic    n / (1/x_1 + ... + 1/x_n)
    arithmetic  (x_1 + ... + x_n) / n
    min         min(x_1, ..., x_n)

A run ``is_unstable`` when any scoring metric is missing, not a finite number, or exactly zero (raw value).
Its score is then NaN: such a run must not win a tune by accident. For the same reason, with more than one
metric a value <= 0 makes geometric and harmonic meaningless, and a ``:lower`` value <= 0 has no meaningful
inverse under any strategy: both mark the run unstable, as does a combined score that overflows. The reason is
recorded (``run_score_reason``; the ``unstable_reason`` column of run_infos.parquet).

A cross-validation's ``score`` is the mean of the run scores of the runs whose status is ``"success"`` and that
are not unstable (NaN if there are none; a NaN run score counts as unstable). ``score_is_unstable`` is true when
any run is unstable or did not succeed (and for a cv without runs), so a partly failed cv is visibly marked
while still being ranked on what did work.

The spread of a cv (``cv_spread``) is taken over the same runs: the mean (= ``score``), the sample standard deviation
(n - 1) and the naive standard error ``sem = std / sqrt(n)`` of their run scores (NaN with fewer than two runs), the
corrected one ``sem_corrected = std * sqrt(1/n + n_val/n_train)`` (Nadeau & Bengio 2003: the folds' training sets
overlap, so their scores are not independent and the naive sem is too small; ``n_val/n_train`` is the mean ratio of
the val and train sizes of the runs' folds, from splits.json), and ``lcb = mean - sem_corrected``. Run scores are already "higher is better" (a ``:lower`` metric enters as ``1/v``), so the
lower confidence bound needs no flip: ``--select lcb`` prefers a trial whose lead is not just noise across folds
and seeds (the one-standard-error idea).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import get_args

from nestling.core.errors import UsageError
from nestling.core.options.choices import MultiScoreStrategy
from nestling.core.tree.run_state import RunState

MULTI_SCORE_STRATEGIES: tuple[str, ...] = get_args(MultiScoreStrategy)
DEFAULT_SCORING = ("val/JaccardIndex", "val/Recall")

_DIRECTIONS = {"higher": True, "lower": False}


@dataclass(frozen=True)
class ScoringMetric:
    """A metric name plus its direction; the direction also configures checkpointing and early stopping."""

    name: str
    higher_is_better: bool = True

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``, as Lightning's ModelCheckpoint and EarlyStopping expect."""
        return "max" if self.higher_is_better else "min"

    def __str__(self) -> str:
        return f"{self.name}:{'higher' if self.higher_is_better else 'lower'}"


def parse_scoring_metric(spec: str) -> ScoringMetric:
    """Parse one ``name[:higher|:lower]`` spec."""
    text = spec.strip()
    name, sep, suffix = text.rpartition(":")
    if not sep:
        name, suffix = text, "higher"
    name = name.strip()
    suffix = suffix.strip().lower()
    if suffix not in _DIRECTIONS:
        raise UsageError(
            f"invalid scoring metric {spec!r}: the suffix must be ':higher' or ':lower' "
            f"(e.g. --scoring_metric val/loss:lower val/JaccardIndex)"
        )
    if not name:
        raise UsageError(
            f"invalid scoring metric {spec!r}: the metric name is empty (e.g. --scoring_metric val/loss:lower)"
        )
    return ScoringMetric(name=name, higher_is_better=_DIRECTIONS[suffix])


def parse_scoring_metrics(specs: Sequence[str]) -> list[ScoringMetric]:
    """Parse the ``--scoring_metric`` list; refuse an empty list and repeated names, which would silently skew scores."""
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise UsageError(
            "no scoring metric given: pass at least one, e.g. --scoring_metric val/JaccardIndex val/loss:lower"
        )
    metrics = [parse_scoring_metric(spec) for spec in specs]
    seen: set[str] = set()
    for metric in metrics:
        if metric.name in seen:
            raise UsageError(
                f"scoring metric {metric.name!r} is given twice in {list(specs)!r}: list each metric once"
            )
        seen.add(metric.name)
    return metrics


def validate_strategy(name: str) -> str:
    """Return the strategy name if known, else raise a UsageError listing the choices."""
    if name not in MULTI_SCORE_STRATEGIES:
        raise UsageError(
            f"unknown multi-score strategy {name!r}: choose one of {', '.join(MULTI_SCORE_STRATEGIES)}"
        )
    return name


def _raw_value(metrics: Mapping[str, float], name: str) -> float | None:
    """The metric as a float, or None when missing or not a number (e.g. a logged string)."""
    if name not in metrics:
        return None
    try:
        return float(metrics[name])
    except (TypeError, ValueError):
        return None


def _combine(values: Sequence[float], strategy: str) -> float:
    n = len(values)
    if n == 1:
        return values[0]
    if strategy == "geometric":
        return math.prod(values) ** (1.0 / n)
    if strategy == "harmonic":
        return n / math.fsum(1.0 / x for x in values)
    if strategy == "arithmetic":
        return math.fsum(values) / n
    return min(values)


def run_score(
    metrics: Mapping[str, float], scoring: Sequence[ScoringMetric], strategy: str
) -> tuple[float, bool]:
    """Score one run from its final metrics: ``(score, is_unstable)``; the score is NaN when unstable."""
    score, reason = run_score_reason(metrics, scoring, strategy)
    return score, reason is not None


def run_score_reason(
    metrics: Mapping[str, float], scoring: Sequence[ScoringMetric], strategy: str
) -> tuple[float, str | None]:
    """``(score, unstable_reason)``: the reason names the metric and its value; None for a stable run."""
    validate_strategy(strategy)
    if not scoring:
        raise UsageError("no scoring metric given: pass at least one, e.g. --scoring_metric val/JaccardIndex")
    if len(scoring) == 1:  # rank by the value itself: -v for a lower-is-better metric, whatever its sign
        metric = scoring[0]
        raw = _raw_value(metrics, metric.name)
        reason = _bad_value(metric.name, metrics, raw)
        if reason is not None or raw is None:
            return math.nan, reason
        return (raw if metric.higher_is_better else -raw), None
    values: list[float] = []
    for metric in scoring:
        raw = _raw_value(metrics, metric.name)
        reason = _bad_value(metric.name, metrics, raw)
        if reason is not None or raw is None:
            return math.nan, reason
        if strategy in ("geometric", "harmonic") and raw < 0:
            return math.nan, f"{metric.name}={raw:.4g} <= 0 in a {strategy} combination"
        if not metric.higher_is_better and raw < 0:
            return math.nan, f"{metric.name}={raw:.4g} <= 0 has no meaningful inverse (:lower in a combination)"
        values.append(raw if metric.higher_is_better else 1.0 / raw)
    score = _combine(values, strategy)
    if not math.isfinite(score):
        return math.nan, f"the {strategy} combination is not finite ({score})"
    return score, None


def _bad_value(name: str, metrics: Mapping[str, float], raw: float | None) -> str | None:
    """Why a scoring metric's value cannot be scored at all: missing, not a number, not finite, zero."""
    if name not in metrics:
        return f"{name} missing"
    if raw is None:
        return f"{name}={metrics[name]!r} is not a number"
    if not math.isfinite(raw):
        return f"{name}={raw} is not finite"
    if raw == 0.0:
        return f"{name}=0"
    return None


def _good(runs: Sequence[tuple[float, bool, str]]) -> list[float]:
    success = RunState.SUCCESS  # looked up once, not per run
    return [score for score, unstable, status in runs if status == success and not unstable and math.isfinite(score)]


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation, standard errors and lower confidence bound of a cv's usable run scores.
    `sem` is the naive standard error; `sem_corrected` the Nadeau-Bengio one (NaN where the folds' sizes are
    unknown, as for a retrain's seeds, which share one training set and have no cv spread to correct)."""

    mean: float
    std: float
    sem: float
    sem_corrected: float = math.nan

    @property
    def lcb(self) -> float:
        return self.mean - self.sem_corrected


def corrected_sem(std: float, n: int, val_train_ratio: float) -> float:
    """Nadeau & Bengio's corrected standard error of a mean of `n` cv run scores: ``std * sqrt(1/n + n_val/n_train)``.
    The second term is the variance the overlapping training sets add; it does not shrink with more runs."""
    if n < 2 or not math.isfinite(std) or not math.isfinite(val_train_ratio):
        return math.nan
    return std * math.sqrt(1.0 / n + val_train_ratio)


def cv_spread(runs: Sequence[tuple[float, bool, str]], val_train_ratios: Sequence[float] | None = None) -> Spread:
    """The spread of the run scores `cv_score` averages; std and the sems are NaN with fewer than two such runs.
    `val_train_ratios`: n_val/n_train of each run's fold, aligned with `runs` (None: unknown, no corrected sem)."""
    if val_train_ratios is None:
        return spread(_good(runs))
    success = RunState.SUCCESS
    pairs = [(score, ratio) for (score, unstable, status), ratio in zip(runs, val_train_ratios, strict=True)
             if status == success and not unstable and math.isfinite(score)]  # fmt: skip
    naive = spread([score for score, _ in pairs])
    ratio = math.fsum(r for _, r in pairs) / len(pairs) if pairs else math.nan
    return Spread(naive.mean, naive.std, naive.sem, corrected_sem(naive.std, len(pairs), ratio))


def spread(values: Sequence[float]) -> Spread:
    """Mean, sample standard deviation (n - 1) and standard error of `values`; NaN where n is too small."""
    good = list(values)
    n = len(good)
    if not n:
        return Spread(math.nan, math.nan, math.nan)
    mean = math.fsum(good) / n
    if n < 2:
        return Spread(mean, math.nan, math.nan)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in good) / (n - 1))
    return Spread(mean, std, std / math.sqrt(n))


def cv_score(runs: Sequence[tuple[float, bool, str]]) -> tuple[float, bool]:
    """Score a cv from its runs' ``(score, is_unstable, status)``: ``(score, score_is_unstable)``.

    A cv without runs has nothing to rank on, so it is NaN and unstable.
    """
    if not runs:
        return math.nan, True
    good = _good(runs)
    score_is_unstable = len(good) < len(runs)
    score = math.fsum(good) / len(good) if good else math.nan
    return score, score_is_unstable
