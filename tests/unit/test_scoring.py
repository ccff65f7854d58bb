"""Scoring formulas with exact numbers, instability rules and the cv aggregate."""

from __future__ import annotations

import math

import pytest

from nestling.errors import UsageError
from nestling.scoring import (
    DEFAULT_SCORING,
    MULTI_SCORE_STRATEGIES,
    ScoringMetric,
    cv_score,
    parse_scoring_metrics,
    run_score,
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


def test_lower_enters_inverted() -> None:
    scoring = [ScoringMetric("val/loss", False)]
    assert run_score({"val/loss": 0.5}, scoring, "geometric") == (2.0, False)
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
