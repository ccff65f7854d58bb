"""The report's figures read as a reader expects (issue 21 #7): round, separate axis labels, a linear axis for a
uniform hyperparameter, parallel coordinates labelled along each axis and coloured dark for the best, a time axis in
seconds since the start, no "(geometric)" beside a single metric. The rendered SVG is checked in
tests/e2e/test_report_browser.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from bowl_trees import bowl_tune

from nestling.plan.settings import PlanSettings
from nestling.read import collect as C
from nestling.read.report import figures as F
from nestling.read.report import timeline as TL
from nestling.read.report import tune_page as TP
from nestling.read.report.html import options_line


@pytest.mark.parametrize(
    ("low", "high", "log", "ticks"),
    [
        (0.0, 1.0, False, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.0512, 0.95, False, [0.2, 0.4, 0.6, 0.8]),
        (0.044, 0.145, False, [0.06, 0.08, 0.1, 0.12, 0.14]),
        (3.0, 17.0, False, [4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]),
        (1e-5, 1.0, True, [1e-5, 0.001, 0.1]),  # six decades: every other power of ten
        (0.0002, 0.05, True, [0.0003, 0.001, 0.003, 0.01, 0.03]),  # under three powers of ten: 1-3-10
        (0.0011, 0.0019, True, [0.0011, 0.0019]),  # no power of ten, 1-3-10 or 1-2-5 value inside: the ends
        (0.5, 0.5, False, [0.5]),
    ],
)  # fmt: skip
def test_nice_ticks(low: float, high: float, log: bool, ticks: list[float]) -> None:
    assert F.nice_ticks(low, high, log) == pytest.approx(ticks)


def test_labels_of_adjacent_log_ticks_never_touch() -> None:
    """`0.0010.002`: two labels a few pixels apart; no two of the values are closer than a factor of 2."""
    for low, high in ((1e-4, 0.1), (0.0005, 0.003), (2e-6, 0.9)):
        ticks = F.nice_ticks(low, high, log=True)
        assert all(b / a >= 2 for a, b in zip(ticks, ticks[1:], strict=False)), ticks


def test_axes_of_an_adaptive_tune_follow_its_space(tmp_path: Path) -> None:
    """A TPE tune's plan holds the space: lr log-uniform (log axis), width uniform (linear, whatever its values)."""
    collected = C.collect(bowl_tune(tmp_path, "ax", "--sampler", "tpe", n_trials=6), write=False)
    axes = {a.name: a for a in TP._hp_axes(collected.cvs, collected.plan)}
    assert axes["lr"].log and not axes["width"].log and not axes["depth"].log


def test_parallel_coordinates_label_each_axis_and_colour_the_best_dark(tmp_path: Path) -> None:
    collected = C.collect(bowl_tune(tmp_path, "pc", "--sampler", "tpe", n_trials=8), write=False)
    axes = TP._hp_axes(collected.cvs, collected.plan)
    rows, names, ticks = TP._parallel_rows(collected.cvs, axes)
    for name in names:  # lr, width, depth, score: round values along the axis, not only its two ends
        along = [t for t in ticks if t["axis"] == name]
        assert len(along) >= 3, (name, along)
        assert all(0.0 <= t["pos"] <= 1.0 for t in along)
    scores = [cv.score for cv in collected.cvs]
    spec = F.parallel_coordinates(rows, names, ticks)
    color = spec["layer"][2]["encoding"]["color"]
    assert color["scale"]["domain"] == [min(scores), max(scores)] and color["scale"]["reverse"] is True
    assert color["legend"]["values"][0] == min(scores) and color["legend"]["values"][-1] == max(scores)
    assert spec["resolve"]["legend"]["color"] == "independent"  # one gradient legend, not symbols


def test_the_timeline_is_in_seconds_since_the_first_start(tmp_path: Path) -> None:
    assert [TL.time_unit(s) for s in (10, 180, 181, 3 * 3600, 4 * 3600)] == [
        ("s", 1.0), ("s", 1.0), ("min", 60.0), ("min", 60.0), ("h", 3600.0)
    ]  # fmt: skip
    spec = F.timeline_chart([{"lane": "a", "t0": 0.0, "t1": 1.5, "status": "success", "run_name": "r",
                              "duration": 1.5, "started": "12:00:00"}], [], ["a"], "s")  # fmt: skip
    x = spec["layer"][0]["encoding"]["x"]
    assert x["type"] == "quantitative" and x["title"] == "time since the first run started (s)"


def test_the_combination_is_named_only_for_several_metrics() -> None:
    one = PlanSettings.from_options({"cv": {"scoring_metric": ["val/acc"], "multi_score_strategy": "geometric"}})
    two = PlanSettings.from_options({"cv": {"scoring_metric": ["val/a", "val/b"], "multi_score_strategy": "harmonic"}})
    assert "(geometric)" not in options_line(one) and "scoring val/acc," in options_line(one)
    assert "scoring val/a val/b (harmonic)," in options_line(two)
