"""The report's figures as Vega-Lite specs, built with Altair from plain rows (one dict per mark).

Pure functions: rows in, a spec dict out; no file is read here (the page modules gather the rows). Field names in the
rows are safe identifiers (`h0`, `m1`, ...): Vega-Lite reads `.` and `[` in a field name as a path, and
hyperparameter or metric names may hold them; every axis gets the real name as its title. Altair is imported
lazily: the CLI must not pay for it unless a report is written. No mark is translucent: vl_convert's rasteriser
takes 10-20x longer per translucent mark, and the PNGs must stay cheap for 1,000 runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import altair as alt

WIDTH = 260  # one small panel
WIDE = 900  # one figure across the page
STATE_COLORS = {
    "ok": "#4c78a8", "unstable": "#f58518", "failed": "#e45756", "pruned": "#9d755d", "missing": "#bab0ac",
    "success": "#4c78a8", "best": "#54a24b", "running": "#72b7b2", "lost": "#b279a2",
}  # fmt: skip
CURVE_COLORS = {  # learning curves: the pruned ones recede (grey), the best trial's stand out
    "best": "#54a24b", "complete": "#4c78a8", "paused": "#72b7b2", "early_stopped": "#f58518", "failed": "#e45756",
    "pruned": "#c7c7c7",
}  # fmt: skip


@dataclass(frozen=True)
class Axis:
    """One hyperparameter as a plot axis: `field` in the rows, `name` for the title."""

    name: str
    field: str
    numeric: bool
    log: bool


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (Vega drops them instead of failing to parse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _alt() -> Any:
    import altair as alt

    return alt


def _data(name: str) -> Any:
    """A named data set: the rows go into the spec's top-level `datasets` after Altair is done. Handing Altair the
    rows themselves makes it walk every value through its schema classes (1,000 runs: a second per figure)."""
    return _alt().NamedData(name=name)


def _spec(chart: alt.TopLevelMixin, **datasets: list[dict[str, Any]]) -> dict[str, Any]:
    """The spec as a dict with its data sets; validation is the test suite's job (tests validate), not every
    report's (slow)."""
    spec: dict[str, Any] = chart.to_dict(validate=False)
    spec["datasets"] = {**spec.get("datasets", {}), **datasets}
    return spec


def _state_color(rows: list[dict[str, Any]], field: str = "state", palette: dict[str, str] | None = None) -> Any:
    """Fixed colours per state (failed is always red), the legend listing only the states present."""
    alt = _alt()
    palette = palette or STATE_COLORS
    present = sorted({str(r.get(field)) for r in rows}, key=lambda s: (s not in palette, list(palette).index(s) if s in palette else 0, s))
    colors = [palette.get(s, "#888888") for s in present]
    return alt.Color(f"{field}:N", title=field, scale=alt.Scale(domain=present, range=colors))


def _scale(values: Iterable[Any]) -> Any:
    """A linear scale that hugs the data, unless the data is one value: Vega then labels its degenerate domain
    with rounded ticks (0.5 shown as "1"), so that axis starts at zero instead."""
    numbers = {v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return _alt().Scale(zero=len(numbers) <= 1)


def nice_ticks(low: float, high: float, log: bool = False, count: int = 5) -> list[float]:
    """Round values to label an axis from `low` to `high` with: about `count` steps of 1, 2 or 5 times a power of
    ten, or on a log axis the powers of ten (with 3x, else 2x and 5x, between them when that gives under three).
    Explicit values, because Vega's own choice on narrow panels runs labels into each other (`0.0010.002`)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high < low:
        return []
    if high == low:
        return [low]
    eps = 1e-9 * (high - low)
    if log and low > 0:
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        ticks: list[float] = []
        for steps in ((1,), (1, 3), (1, 2, 5)):  # decades, else 1-3-10, else 1-2-5: at least three labels
            values = [m * 10.0**e for e in range(first, last + 1) for m in steps]
            ticks = [float(f"{v:.12g}") for v in values if low * (1 - 1e-9) <= v <= high * (1 + 1e-9)]
            if len(ticks) >= 3:
                break
        stride = max(1, math.ceil(len(ticks) / count))
        return ticks[::stride] or [low, high]
    raw = (high - low) / count  # d3's rule: the nearest of 1, 2, 5, 10 times a power of ten
    magnitude = 10.0 ** math.floor(math.log10(raw))
    error = raw / magnitude
    step = magnitude * (10 if error >= 50**0.5 else 5 if error >= 10**0.5 else 2 if error >= 2**0.5 else 1)
    ticks = []
    value = math.ceil((low - eps) / step) * step
    while value <= high + eps:
        ticks.append(float(f"{value:.12g}"))
        value += step
    return ticks


def _numeric_axis(values: Iterable[Any], title: str, log: bool) -> Any:
    """A numeric axis whose labels never overlap: explicit round values (nice_ticks) and greedy overlap removal."""
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    ticks = nice_ticks(min(numbers), max(numbers), log) if numbers else []
    return _alt().Axis(title=title, values=ticks or None, format="~r", labelOverlap="greedy", labelFlush=True)


def score_vs_hparams(rows: list[dict[str, Any]], axes: list[Axis]) -> dict[str, Any]:
    """One panel per hyperparameter: every trial's score against its value (log axis where the space is log)."""
    alt = _alt()
    panels = []
    for axis in axes:
        if axis.numeric:
            values = [r.get(axis.field) for r in rows]
            x = alt.X(f"{axis.field}:Q", axis=_numeric_axis(values, axis.name, axis.log),
                      scale=alt.Scale(type="log") if axis.log else _scale(values))  # fmt: skip
        else:
            x = alt.X(f"{axis.field}:N", title=axis.name, sort="ascending")
        panels.append(
            alt.Chart(_data("trials"), width=WIDTH, height=200)
            .mark_point(filled=True, size=60)
            .encode(
                x=x,
                y=alt.Y("score:Q", title="score", scale=_scale(r["score"] for r in rows)),
                color=_state_color(rows),
                tooltip=[alt.Tooltip("cv_name:N", title="trial"), alt.Tooltip(f"{axis.field}:N", title=axis.name),
                         alt.Tooltip("score:Q", format=".4g")],  # fmt: skip
            )
        )
    return _spec(alt.concat(*panels, columns=3), trials=rows)


def parallel_coordinates(
    rows: list[dict[str, Any]], axis_names: list[str], ticks: list[dict[str, Any]]
) -> dict[str, Any]:
    """Trials as lines across normalised axes (one per hyperparameter, then the score), coloured by score: the best
    dark and drawn last, the colour scale from the lowest to the highest score (its legend labels both).

    rows: trial, axis (its title), pos in [0, 1], label (the raw value), score; ticks: axis, pos, label (round
    values along each numeric axis, every category along a categorical one, written beside the axis)."""
    alt = _alt()
    base = alt.Chart(_data("lines"), width=max(WIDE // 2, 130 * len(axis_names)), height=300)
    x = alt.X("axis:N", sort=axis_names, title=None, axis=alt.Axis(labelAngle=0, domain=False, ticks=False,
                                                                     labelFontWeight="bold", labelPadding=8))  # fmt: skip
    y = alt.Y("pos:Q", axis=None, scale=alt.Scale(domain=[0, 1]))
    scores = [r["score"] for r in rows if isinstance(r.get("score"), (int, float)) and math.isfinite(r["score"])]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    inner = [t for t in nice_ticks(low, high) if low + 0.15 * (high - low) < t < high - 0.15 * (high - low)]
    legend = alt.Legend(type="gradient", values=[low, *inner, high], format=".3~g", gradientLength=200)
    scale = alt.Scale(scheme="viridis", reverse=True, domain=[low, high], nice=False)
    order = alt.Order("score:Q", sort="ascending")
    lines = base.mark_line(strokeWidth=1.5).encode(
        x=x, y=y, color=alt.Color("score:Q", title="score", legend=legend, scale=scale), detail="trial:N", order=order
    )
    points = base.mark_circle(size=25).encode(
        x=x, y=y, color=alt.Color("score:Q", legend=None, scale=scale), order=order,
        tooltip=[alt.Tooltip("trial:N"), alt.Tooltip("axis:N"), alt.Tooltip("label:N", title="value"),
                 alt.Tooltip("score:Q", format=".4g")],
    )  # fmt: skip
    rules = alt.Chart(_data("ticks")).mark_rule(color="#ccc").encode(x=x)
    marks = alt.Chart(_data("ticks")).mark_tick(color="#999", thickness=1, size=6, orient="horizontal").encode(x=x, y=y)
    labels = (
        alt.Chart(_data("ticks"))
        .mark_text(align="left", dx=6, fontSize=10, color="#555")
        .encode(x=x, y=y, text="label:N")
    )
    # the lines' legend alone (the points' would turn the merged one into symbols): a gradient from lowest to highest
    layers = alt.layer(rules, marks, lines, points, labels).resolve_legend(color="independent", stroke="independent")
    return _spec(layers, lines=rows, ticks=ticks)


def top_configurations(runs: list[dict[str, Any]], summary: list[dict[str, Any]], order: list[str]) -> dict[str, Any]:
    """Every fold x seed score of the best trials as points, with each trial's mean +- sem: the noise, visible.

    runs: trial, run_score, fold, seed, run_name; summary: trial, mean, lo, hi (mean -+ sem), n."""
    alt = _alt()
    y = alt.Y("trial:N", sort=order, title=None)
    points = (
        alt.Chart(_data("runs"))
        .mark_point(filled=True, size=50)
        .encode(
            x=alt.X("run_score:Q", title="run score (fold x seed)", scale=_scale(r["run_score"] for r in runs)),
            y=y,
            yOffset=alt.YOffset("seed:N"),
            color=alt.Color("fold:N", title="fold"),
            shape=alt.Shape("seed:N", title="seed"),
            tooltip=["run_name:N", "fold:N", "seed:N", alt.Tooltip("run_score:Q", format=".4g")],
        )
    )
    spread = alt.Chart(_data("summary")).mark_rule(color="black", strokeWidth=2).encode(
        x="lo:Q", x2="hi:Q", y=y
    )
    mean = alt.Chart(_data("summary")).mark_tick(color="black", thickness=3, size=18).encode(
        x="mean:Q", y=y,
        tooltip=["trial:N", alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("sem:Q", format=".3g"), "n:Q"],
    )  # fmt: skip
    return _spec(alt.layer(points, spread, mean, width=WIDE - 200, height=max(120, 34 * len(order))), runs=runs,
                 summary=summary)


def best_so_far(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Score per trial in the order trials were drawn, and the best score so far as a step line.

    rows: trial_number, cv_name, score, state, best (the running best; null before the first stable trial)."""
    alt = _alt()
    base = alt.Chart(_data("trials"), width=WIDE - 200, height=260)
    x = alt.X("trial_number:Q", title="trial number (order drawn)", axis=alt.Axis(tickMinStep=1, format="d"))
    points = base.mark_point(filled=True, size=50).encode(
        x=x, y=alt.Y("score:Q", title="score", scale=_scale(r["score"] for r in rows)), color=_state_color(rows),
        tooltip=["cv_name:N", alt.Tooltip("score:Q", format=".4g"), "state:N"],
    )  # fmt: skip
    line = base.mark_line(interpolate="step-after", color="#54a24b", strokeWidth=2).encode(x=x, y="best:Q")
    return _spec(alt.layer(line, points), trials=rows)


def timeline_chart(
    runs: list[dict[str, Any]],
    gaps: list[dict[str, Any]],
    lanes: list[str],
    unit: str = "s",
    stages: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every run as a bar on its worker's lane (host, GPU or process), idle gaps as grey bars, staging (Task.stage)
    as thin orange bars before the runs that staged or waited for it, against the time since the first run started
    in `unit` (s, min or h: a clock axis labels a 10-s sweep `.500` on every tick).

    runs: lane, t0, t1 (time since the first start, in `unit`), started (clock), status, run_name, duration;
    gaps: lane, t0, t1, idle_s; stages: lane, t0, t1, stage_s, run_name."""
    alt = _alt()
    y = alt.Y("lane:N", sort=lanes, title=None, axis=alt.Axis(labelLimit=360))
    x = alt.X("t0:Q", title=f"time since the first run started ({unit})",
              axis=alt.Axis(format="~r", labelOverlap="greedy"))  # fmt: skip
    width, height = WIDE - 150, max(80, min(900, 20 * len(lanes)))
    bars = (
        alt.Chart(_data("runs"))
        .mark_bar(height={"band": 0.8}, stroke="white", strokeWidth=1)
        .encode(
            x=x,
            x2="t1:Q",
            y=y,
            color=_state_color(runs, "status"),
            tooltip=["run_name:N", "status:N", alt.Tooltip("duration:Q", title="seconds", format=".1f"),
                     alt.Tooltip("started:N", title="started"), "lane:N"],  # fmt: skip
        )
    )
    layers: list[Any] = [bars]
    if gaps:
        idle = (
            alt.Chart(_data("gaps"))
            .mark_bar(color="#dddddd", height={"band": 0.35})
            .encode(x=x, x2="t1:Q", y=y,
                    tooltip=[alt.Tooltip("idle_s:Q", title="idle seconds", format=".1f"), "lane:N"])
        )  # fmt: skip
        layers.insert(0, idle)
    if stages:
        staging = (
            alt.Chart(_data("stages"))
            .mark_bar(color="#f28e2b", height={"band": 0.35})
            .encode(x=x, x2="t1:Q", y=y,
                    tooltip=["run_name:N", alt.Tooltip("stage_s:Q", title="staging seconds", format=".1f"), "lane:N"])
        )  # fmt: skip
        layers.append(staging)
        return _spec(alt.layer(*layers, width=width, height=height), runs=runs, gaps=gaps, stages=stages)
    return _spec(alt.layer(*layers, width=width, height=height), runs=runs, gaps=gaps)


def metrics_by_fold(rows: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """A cv's runs: one panel per metric, the value of every fold (x) and seed (colour).

    rows: metric, fold, seed, value, run_name."""
    alt = _alt()

    def points(panel: Any, y: Any) -> Any:
        return panel.mark_point(filled=True, size=60).encode(
            x=alt.X("fold:O", title="fold", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("seed:N"),
            y=y,
            color=alt.Color("seed:N", title="seed"),
            tooltip=["run_name:N", "fold:N", "seed:N", alt.Tooltip("value:Q", format=".4g")],
        )

    return _metric_panels(rows, metrics, WIDTH - 60, 4, points)


def training_curves(rows: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """A run's logged metrics against the training step, one panel per metric, one line per attempt.

    rows: metric, step, epoch, value, attempt."""
    alt = _alt()

    def lines(panel: Any, y: Any) -> Any:
        return panel.mark_line(point=True).encode(
            x=alt.X("step:Q", title="step"),
            y=y,
            color=alt.Color("attempt:N", title="attempt"),
            tooltip=["epoch:Q", "step:Q", alt.Tooltip("value:Q", format=".4g"), "attempt:N"],
        )

    return _metric_panels(rows, metrics, WIDTH, 3, lines)


def _metric_panels(
    rows: list[dict[str, Any]], metrics: list[str], width: int, columns: int, draw: Callable[[Any, Any], Any]
) -> dict[str, Any]:
    """One panel per metric over the rows of that metric (`value` on y, its own scale): `draw(panel, y)` gives the
    panel its marks."""
    alt = _alt()
    panels = []
    for name in metrics:
        panel = alt.Chart(_data("values"), width=width, height=180).transform_filter(
            alt.FieldEqualPredicate(field="metric", equal=name)
        )
        y = alt.Y("value:Q", title=name, scale=_scale(r["value"] for r in rows if r["metric"] == name))
        panels.append(draw(panel, y))
    return _spec(alt.concat(*panels, columns=columns), values=rows)


def learning_curves(rows: list[dict[str, Any]], rungs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The scoring metric after every epoch, one line per run, rungs marked (dashed rules): the first figure a
    researcher looks at. Runs of pruned trials are grey (drawn first, under the others), the best trial's green.

    rows: run_name, trial, epoch (epochs trained, from 1), value, state; rungs: epoch, label."""
    alt = _alt()
    x = alt.X("epoch:Q", title="epochs trained", axis=alt.Axis(tickMinStep=1, format="d"))
    lines = (
        alt.Chart(_data("curves"))
        .mark_line(point=alt.OverlayMarkDef(size=14), strokeWidth=1.4)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=metric, scale=_scale(r["value"] for r in rows)),
            color=_state_color(rows, palette=CURVE_COLORS),
            detail="run_name:N",
            order="epoch:Q",
            tooltip=["trial:N", "run_name:N", "epoch:Q", alt.Tooltip("value:Q", format=".4g"), "state:N"],
        )
    )
    layers: list[Any] = [lines]
    if rungs:
        marks = alt.Chart(_data("rungs")).mark_rule(color="#888888", strokeDash=[4, 4]).encode(
            x="epoch:Q", tooltip=["label:N"]
        )
        layers.insert(0, marks)
    return _spec(alt.layer(*layers, width=WIDE - 200, height=300), curves=rows, rungs=rungs)
