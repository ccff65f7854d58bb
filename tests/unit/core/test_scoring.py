"""Scoring formulas with exact numbers, instability rules and the cv aggregate."""

from __future__ import annotations

import math

import pytest

from nestling.core.errors import UsageError
from nestling.core.ml.scoring import (
    DEFAULT_SCORING,
    MULTI_SCORE_STRATEGIES,
    ScoringMetric,
    cv_score,
    parse_scoring_metrics,
    run_score,
    run_score_reason,
    validate_strategy,
)

HIGH_AB = [ScoringMetric("a", True), ScoringMetric("b", True)]


def test_parse_suffixes() -> None:
    metrics = parse_scoring_metrics(["val/JaccardIndex", "val/Recall:higher", "val/loss:lower"])
    assert metrics == [
        ScoringMetric("val/JaccardIndex", True),
        ScoringMetric("val/Recall", True),
        ScoringMetric("val/loss", False),
    ]
    assert [m.mode for m in metrics] == ["max", "max", "min"]


def test_parse_defaults() -> None:
    assert [m.name for m in parse_scoring_metrics(DEFAULT_SCORING)] == list(DEFAULT_SCORING)


def test_parse_single_string_is_one_metric() -> None:
    assert parse_scoring_metrics("val/loss:lower") == [ScoringMetric("val/loss", False)]


@pytest.mark.parametrize("specs", [[], ["val/loss:down"], [":lower"], ["val/loss:"], ["a", "a:lower"]])
def test_parse_errors(specs: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        parse_scoring_metrics(specs)
    assert "\n" not in str(err.value)


def test_validate_strategy() -> None:
    for name in MULTI_SCORE_STRATEGIES:
        assert validate_strategy(name) == name
    with pytest.raises(UsageError, match="geometric, harmonic, arithmetic, min"):
        validate_strategy("median")
    with pytest.raises(UsageError, match="median"):
        run_score({"a": 1.0, "b": 1.0}, HIGH_AB, "median")


@pytest.mark.parametrize(
    ("strategy", "a", "b", "expected"),
    [
        ("geometric", 0.25, 1.0, 0.5),
        ("harmonic", 0.5, 1.0, 2 / 3),
        ("arithmetic", 0.25, 1.0, 0.625),
        ("min", 0.25, 1.0, 0.25),
    ],
)
def test_strategies(strategy: str, a: float, b: float, expected: float) -> None:
    score, unstable = run_score({"a": a, "b": b, "other": 0.0}, HIGH_AB, strategy)
    assert not unstable
    assert score == pytest.approx(expected, rel=1e-12)


def test_lower_enters_inverted_in_a_combination() -> None:
    mixed = [ScoringMetric("val/loss", False), ScoringMetric("val/iou", True)]
    score, unstable = run_score({"val/loss": 0.5, "val/iou": 0.125}, mixed, "geometric")
    assert (score, unstable) == (pytest.approx(0.5), False)  # sqrt(2.0 * 0.125)
    assert run_score({"val/loss": 0.5, "val/iou": 0.125}, mixed, "min") == (0.125, False)


@pytest.mark.parametrize(
    "metrics",
    [
        {"a": 0.0, "b": 1.0},
        {"a": float("nan"), "b": 1.0},
        {"a": float("inf"), "b": 1.0},
        {"a": -float("inf"), "b": 1.0},
        {"b": 1.0},
        {"a": "oops", "b": 1.0},
    ],
)
@pytest.mark.parametrize("strategy", MULTI_SCORE_STRATEGIES)
def test_unstable(metrics: dict[str, float], strategy: str) -> None:
    score, unstable = run_score(metrics, HIGH_AB, strategy)
    assert unstable
    assert math.isnan(score)


@pytest.mark.parametrize("strategy", MULTI_SCORE_STRATEGIES)
def test_a_single_lower_metric_ranks_by_the_value_itself(strategy: str) -> None:
    """1/v ranked -0.5 below 2.0 and 0.1 above 0.5 only by luck of the sign (issue 16): the score is -v."""
    scoring = [ScoringMetric("val/nll", False)]
    losses = [0.5, -0.5, 2.0, -3.0, 0.1]
    scores = [run_score({"val/nll": v}, scoring, strategy) for v in losses]
    assert scores == [(-0.5, False), (0.5, False), (-2.0, False), (3.0, False), (-0.1, False)]
    best_first = [v for _, v in sorted(zip(scores, losses, strict=True), reverse=True)]
    assert best_first == sorted(losses)  # the lowest loss ranks first


@pytest.mark.parametrize(
    ("metrics", "scoring", "strategy", "reason"),
    [
        ({"a": -0.5, "b": 1.0}, "a b", "geometric", "a=-0.5 <= 0 in a geometric combination"),
        ({"a": 1.0, "b": -2.0}, "a b", "harmonic", "b=-2 <= 0 in a harmonic combination"),
        ({"a": 1.0, "b": -2.0}, "a b:lower", "arithmetic", "b=-2 <= 0 has no meaningful inverse (:lower in a combination)"),
        ({"a": 0.0, "b": 1.0}, "a b", "min", "a=0"),
        ({"b": 1.0}, "a b", "min", "a missing"),
        ({"a": float("nan"), "b": 1.0}, "a b", "min", "a=nan is not finite"),
        ({"a": "x", "b": 1.0}, "a b", "min", "a='x' is not a number"),
    ],
)  # fmt: skip
def test_an_unstable_run_says_which_metric_and_value(
    metrics: dict[str, float], scoring: str, strategy: str, reason: str
) -> None:
    score, why = run_score_reason(metrics, parse_scoring_metrics(scoring.split()), strategy)
    assert math.isnan(score)
    assert why == reason


def test_a_stable_run_has_no_reason() -> None:
    assert run_score_reason({"a": 0.25, "b": 1.0}, HIGH_AB, "geometric") == (0.5, None)


def test_zero_lower_is_unstable() -> None:
    score, unstable = run_score({"val/loss": 0.0}, [ScoringMetric("val/loss", False)], "arithmetic")
    assert unstable and math.isnan(score)


def test_negative_values() -> None:
    # One metric: every strategy is the value itself, negative or not.
    assert run_score({"a": -0.5}, [ScoringMetric("a")], "geometric") == (-0.5, False)
    # Several: geometric / harmonic are undefined, arithmetic / min are fine.
    for strategy in ("geometric", "harmonic"):
        score, unstable = run_score({"a": -0.5, "b": -0.5}, HIGH_AB, strategy)
        assert unstable and math.isnan(score)
    assert run_score({"a": -0.5, "b": 1.5}, HIGH_AB, "arithmetic") == (0.5, False)
    assert run_score({"a": -0.5, "b": 1.5}, HIGH_AB, "min") == (-0.5, False)


def test_cv_mean_over_stable_successful_only() -> None:
    runs = [
        (0.5, False, "success"),
        (0.7, False, "success"),
        (math.nan, True, "success"),
        (0.9, False, "failed"),
    ]
    score, unstable = cv_score(runs)
    assert score == pytest.approx(0.6)
    assert unstable


def test_cv_all_good() -> None:
    assert cv_score([(0.5, False, "success"), (0.25, False, "success")]) == (0.375, False)


def test_cv_all_failed_is_nan_and_unstable() -> None:
    score, unstable = cv_score([(math.nan, True, "failed"), (math.nan, False, "failed")])
    assert math.isnan(score) and unstable


def test_cv_empty_is_nan_and_unstable() -> None:
    score, unstable = cv_score([])
    assert math.isnan(score) and unstable
