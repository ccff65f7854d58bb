"""The page of a tune: ranked trials, score against hyperparameters, the best configurations, the retrain."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.lazy import lazy_module
from nestling.core.ml.space import SPACE_TABLE
from nestling.core.options import config_files as files
from nestling.core.tree.run_epochs import read_curve
from nestling.core.tree.run_state import RunState
from nestling.execute.search.pruners import rung_epochs
from nestling.execute.search.rungs import Ladder
from nestling.execute.search.trials import TrialState
from nestling.read.report import figures
from nestling.read.report.choice import choice_section
from nestling.read.report.html import attr, html_table, num, options_line, para, td
from nestling.read.report.page import Figure, Page, Section
from nestling.read.report.problems import problems_section
from nestling.read.report.retrain_section import retrain_section
from nestling.read.report.timeline import as_of, timeline, timeline_section

if TYPE_CHECKING:
    import polars as pl

    from nestling.plan.model import Plan
    from nestling.read import collect
    from nestling.read.collect import Collected, CvSummary
else:
    collect = lazy_module("nestling.read.collect")

TOP_CONFIGURATIONS = 10  # trials whose every fold x seed score is plotted
MAX_CURVE_RUNS = 400  # learning curves drawn at most (a line per run: more is a grey mass, and a slow PNG)
MEAN_SEM_COLUMNS = (("mean", "sem"), ("score_mean", "score_sem"), ("run_score_mean", "run_score_sem_corrected"),
                    ("run_score_mean", "run_score_sem"))  # per-trial spread, when the tune table has it
LOG_SPAN = 100.0  # positive values spanning more than two decades are plotted on a log axis


def tune_page(collected: Collected) -> Page:
    plan = collected.plan
    frame = collect.tune_table(collected.cvs, collected.plan.settings.select)  # as in tune_infos.parquet
    rows = {r["cv_name"]: r for r in frame.iter_rows(named=True)}
    order = _tune_order(collected, frame)
    states = {cv.cv_name: _trial_state(cv, rows.get(cv.cv_name, {})) for cv in collected.cvs}
    axes = _hp_axes(collected.cvs, plan)
    sections = [
        Section(f"Trials, ranked by {collect.selected(collected)}",
                para("Complete trials first (stable before unstable, then by the ranking), then pruned ones, then "
                     "those without a score: the rank column of tune_infos.parquet, as nestling collect prints it.")
                + _ranked_table(order, rows, axes, states, frame.columns)),  # fmt: skip
    ]
    curves = _learning_curves_section(collected)
    if curves is not None:
        sections.append(curves)
    hp_rows = [
        {
            "cv_name": cv.cv_name,
            "score": figures.clean(cv.score),
            "state": states[cv.cv_name],
            **{a.field: _axis_value(cv.hparams.get(a.name), a) for a in axes},
        }
        for cv in collected.cvs
    ]
    if axes:
        sections.append(
            Section(
                "Score against each hyperparameter",
                para("Log axes for log-distributed hyperparameters (from the space, or values spanning over two "
                   "decades). Trials without a score are not drawn."),  # fmt: skip
                [
                    Figure("score-vs-hparams", "score against each hyperparameter",
                           figures.score_vs_hparams(hp_rows, axes)),
                    Figure("parallel-coordinates", "parallel coordinates, coloured by score",
                           figures.parallel_coordinates(*_parallel_rows(collected.cvs, axes))),
                ],  # fmt: skip
            )
        )
    top = [cv for cv in order if _good_scores(cv)][:TOP_CONFIGURATIONS]
    if top:
        runs, summary = _top_rows(top)
        sections.append(
            Section(
                f"Top {len(top)} configurations: every fold x seed",
                para("Points are single runs (colour: fold, shape: seed); the bar is the mean ± the corrected standard "
                   "error (Nadeau-Bengio: the folds' training sets overlap) of the stable successful runs, the score "
                   "that ranks the trials."),  # fmt: skip
                [Figure("top-configurations", "top configurations",
                        figures.top_configurations(runs, summary, [cv.cv_name or "" for cv in top]))],  # fmt: skip
            )
        )
    sections.append(
        Section(
            "Best so far",
            para("Each trial's score in the order trials were drawn; the line is the best stable score so far."),
            [Figure("best-so-far", "best score so far", figures.best_so_far(_best_so_far_rows(collected.cvs,
                                                                                                 states)))],
        )  # fmt: skip
    )
    times = timeline(plan.runs)
    sections.append(timeline_section(times))
    sections.append(problems_section(collected.cvs))
    best = next((cv for cv in order if not math.isnan(cv.score)), None)
    choice = choice_section(collected, best)
    if choice is not None:
        sections.append(choice)
    retrain = retrain_section(plan)
    if retrain is not None:
        sections.append(retrain)
    counts = collected.counts
    pruned = f", {counts[RunState.PRUNED]} pruned ({collected.n_pruned_trials} trials pruned)" if (
        collected.n_pruned_trials) else ""  # fmt: skip
    subtitle = (
        f"{len(collected.cvs)} trials, {sum(counts.values())} runs: {counts[RunState.SUCCESS]} success, "
        f"{counts[RunState.FAILED]} failed, {counts[RunState.MISSING]} missing{pruned}. "
        + (f"Best: {best.cv_name} with score {num(best.score)}." if best else "No trial has a score.")
    )
    return Page(f"tune {plan.name}", subtitle + " " + options_line(plan.settings), sections, as_of(times.last_end))


def _tune_order(collected: Collected, frame: pl.DataFrame) -> list[CvSummary]:
    """The ranking of the tune table: its `rank` column when it has one, else collect's by the tune's --select."""

    cvs = collected.cvs
    if "rank" in frame.columns:
        rank = dict(zip(frame.get_column("cv_name").to_list(), frame.get_column("rank").to_list(), strict=True))
        return sorted(cvs, key=lambda cv: (rank.get(cv.cv_name) is None, rank.get(cv.cv_name) or 0))
    return collect.ranked(cvs, collect.selected(collected))


def _trial_state(cv: CvSummary, row: dict[str, Any]) -> str:
    """The trial's state as the page colours it (figures.STATE_COLORS): pruned, missing (no run has a result),
    failed, or a scored trial told apart as unstable or ok."""
    if row.get("state") == TrialState.PRUNED:  # adaptive search stopped it after some folds
        return TrialState.PRUNED
    if cv.n_runs and cv.n_missing == cv.n_runs:
        return RunState.MISSING
    if cv.n_success == 0 or math.isnan(cv.score):
        return TrialState.FAILED
    return "unstable" if cv.score_is_unstable else "ok"


def _hp_axes(cvs: list[CvSummary], plan: Plan) -> list[figures.Axis]:
    """The hyperparameters that vary between trials (all of them when none does), as plot axes: log where the space
    says log-uniform, linear where it says anything else (issue 21 #7: a uniform dropout drawn on a log axis), and
    only where the space is unknown (its file gone) log when the values span more than two decades."""
    keys: dict[str, None] = {}
    for cv in cvs:
        keys.update(dict.fromkeys(cv.hparams))
    varying = [k for k in keys if len({repr(cv.hparams.get(k)) for cv in cvs}) > 1] or list(keys)
    log_scales = _log_scales(plan)
    axes = []
    for i, key in enumerate(varying):
        values = [cv.hparams.get(key) for cv in cvs if cv.hparams.get(key) is not None]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        numeric = bool(values) and len(numbers) == len(values)
        log = numeric and min(numbers) > 0 and log_scales.get(key, _spans_decades(numbers))
        axes.append(figures.Axis(name=key, field=f"h{i}", numeric=numeric, log=log))
    return axes


def _axis_value(value: Any, axis: figures.Axis) -> Any:
    """Numbers as they are; categories as their label (an empty string must still show on the axis)."""
    if axis.numeric:
        return figures.clean(value)
    return _label(value)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _label(value)


def _label(value: Any) -> str:
    return '""' if value == "" else num(value)


def _spans_decades(values: list[float]) -> bool:
    low, high = min(values), max(values)
    return low > 0 and high / low > LOG_SPAN


def _log_scales(plan: Plan) -> dict[str, bool]:
    """Whether each key of the tune's space is log-distributed: from plan.json's space (an adaptive tune), else from
    the space's file (--hpconfig, else --config's table). Empty when the file is gone or unreadable."""
    if plan.space is not None:
        scales = {}
        for key, text in plan.space.items():
            try:
                scales[key] = bool(json.loads(text).get("attributes", {}).get("log", False))
            except (ValueError, AttributeError):
                continue
        return scales
    settings = plan.settings
    source = settings.hpconfig or settings.config_file
    if not source:
        return {}
    try:
        data = files.read(Path(source))
    except Exception:  # moved, edited, unreadable: the report must still be written
        return {}
    table = data.get(SPACE_TABLE) if isinstance(data, dict) else None
    if not isinstance(table, dict):
        return {}
    return {
        str(k): isinstance(spec, dict) and str(spec.get("distribution", "")).lower() in ("loguniform", "log")
        for k, spec in table.items()
    }  # fmt: skip


def _ranked_table(
    order: list[CvSummary], rows: dict[Any, dict[str, Any]], axes: list[figures.Axis], states: dict[Any, str],
    columns: list[str],
) -> str:  # fmt: skip
    spread = next(((m, s) for m, s in MEAN_SEM_COLUMNS if m in columns and s in columns), None)
    head = ["rank", "trial", *[a.name for a in axes], "score"]
    head += ["mean ± sem"] if spread else []
    head += ["lcb"] if "lcb" in columns else []
    head += ["p_best"] if "p_best" in columns else []
    head += ["state", "runs", "failed"]
    body = []
    for rank, cv in enumerate(order, 1):
        row = rows.get(cv.cv_name, {})
        cells = [td(rank), td(cv.cv_name, "name")]
        cells += [td(cv.hparams.get(a.name), a.name) for a in axes]
        cells.append(td(row.get("score", cv.score), "score"))
        if spread:
            mean, sem = row.get(spread[0]), row.get(spread[1])
            plus = "" if not isinstance(sem, (int, float)) or math.isnan(sem) else f" ± {sem:.2g}"  # no "± nan"
            cells.append(f'<td class="num" data-col="mean" data-value="{attr(mean)}" data-sem="{attr(sem)}">'
                         f"{num(mean)}{plus}</td>")  # fmt: skip
        if "lcb" in columns:
            cells.append(td(row.get("lcb"), "lcb"))
        if "p_best" in columns:
            cells.append(td(row.get("p_best"), "p_best"))
        cells += [td(states[cv.cv_name], "state"), td(row.get("n_runs", cv.n_runs), "n_runs"),
                  td(row.get("n_failed", cv.n_failed), "n_failed")]  # fmt: skip
        body.append(f'<tr class="state-{html.escape(states[cv.cv_name])}">{"".join(cells)}</tr>')
    return html_table("ranked", head, body)


def _good_scores(cv: CvSummary) -> list[tuple[dict[str, Any], float]]:
    """The runs the cv score is the mean of (stable, successful, finite score), with their score."""
    return [
        (r, r["run_score"]) for r in cv.table.iter_rows(named=True)
        if r["status"] == RunState.SUCCESS and not r["is_unstable"] and r["run_score"] is not None
        and math.isfinite(r["run_score"])
    ]  # fmt: skip


def _top_rows(top: list[CvSummary]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs, summary = [], []
    for cv in top:
        for r in cv.table.iter_rows(named=True):
            if r["run_score"] is not None and math.isfinite(r["run_score"]):
                runs.append({"trial": cv.cv_name, "run_score": r["run_score"], "fold": r["fold"], "seed": r["seed"],
                             "run_name": r["run_name"]})  # fmt: skip
        good = cv.spread  # one rule for every mean ± sem (scoring.cv_spread): the corrected sem, NaN for one run
        sem = good.sem_corrected
        summary.append({"trial": cv.cv_name, "mean": figures.clean(good.mean), "sem": figures.clean(sem),
                        "lo": figures.clean(good.mean - sem), "hi": figures.clean(good.mean + sem),
                        "n": len(_good_scores(cv))})  # fmt: skip  (no error bar where there is no spread)
    return runs, summary


def _parallel_rows(
    cvs: list[CvSummary], axes: list[figures.Axis]
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """Every trial's position on each axis, normalised to [0, 1] (log10 first on log axes, categories evenly), and
    the labels along each axis: every category, or round values between a numeric axis's lowest and highest."""
    names = [a.name for a in axes] + ["score"]
    positions: dict[str, dict[Any, float]] = {}
    for axis in axes:
        values = [cv.hparams.get(axis.name) for cv in cvs]
        positions[axis.name] = _normalise(values, axis.numeric, axis.log)
    positions["score"] = _normalise([figures.clean(cv.score) for cv in cvs], True, False)
    rows = []
    for cv in cvs:
        score = figures.clean(cv.score)
        for axis_name in names:
            value = score if axis_name == "score" else cv.hparams.get(axis_name)
            pos = positions[axis_name].get(_key(value))
            if pos is None:
                continue
            rows.append({"trial": cv.cv_name, "axis": axis_name, "pos": pos, "label": _short(value), "score": score})
    rows.sort(key=lambda r: (r["score"] is not None, r["score"] or 0))  # the best lines drawn last, on top
    ticks: list[dict[str, Any]] = []
    scales = {a.name: a for a in axes}
    for axis_name in names:
        scale = scales.get(axis_name)
        if scale is not None and not scale.numeric:  # every category beside its place
            labels = {row["pos"]: row["label"] for row in rows if row["axis"] == axis_name}
            ticks += [{"axis": axis_name, "pos": pos, "label": label} for pos, label in sorted(labels.items())]
            continue
        log = scale.log if scale is not None else False
        values = [score if axis_name == "score" else cv.hparams.get(axis_name) for cv in cvs
                  for score in [figures.clean(cv.score)]]  # fmt: skip
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v)]  # fmt: skip
        if not numbers:
            continue
        low, high = min(numbers), max(numbers)
        for tick in figures.nice_ticks(low, high, log) if high > low else [low]:
            pos = _position(tick, low, high, log)
            ticks.append({"axis": axis_name, "pos": pos, "label": f"{tick:.4g}"})
    return rows, names, ticks


def _position(value: float, low: float, high: float, log: bool) -> float:
    """Where `value` sits on an axis normalised from `low` (0) to `high` (1), as _normalise places the trials."""
    if high <= low:
        return 0.5
    if log:
        return (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low))
    return (value - low) / (high - low)


def _key(value: Any) -> Any:
    return repr(value)


def _normalise(values: list[Any], numeric: bool, log: bool) -> dict[Any, float]:
    present = [v for v in values if v is not None]
    if not present:
        return {}
    if not numeric:
        labels = sorted({_key(v) for v in present})
        step = 1 / (len(labels) - 1) if len(labels) > 1 else 0
        return {label: (i * step if len(labels) > 1 else 0.5) for i, label in enumerate(labels)}
    scaled = {_key(v): (math.log10(v) if log else float(v)) for v in present}
    low, high = min(scaled.values()), max(scaled.values())
    return {k: ((v - low) / (high - low) if high > low else 0.5) for k, v in scaled.items()}


def _best_so_far_rows(cvs: list[CvSummary], states: dict[Any, str]) -> list[dict[str, Any]]:
    rows = []
    best: float | None = None
    for number, cv in enumerate(sorted(cvs, key=lambda c: (c.hp_index is None, c.hp_index or 0))):
        score = figures.clean(cv.score)
        if score is not None and states[cv.cv_name] == "ok":
            best = score if best is None else max(best, score)
        rows.append({"trial_number": cv.hp_index if cv.hp_index is not None else number, "cv_name": cv.cv_name,
                     "score": score, "state": states[cv.cv_name], "best": best})  # fmt: skip
    return rows


def _learning_curves_section(collected: Collected) -> Section | None:
    """Every run's first scoring metric after each epoch (its curve.json), rungs marked; None when no run
    trained more than one epoch. At most MAX_CURVE_RUNS runs, the best-ranked trials' first."""
    plan = collected.plan
    metric = plan.settings.scoring()[0].name
    dirs = {run.run_name: run.dir for run in plan.runs}
    ranked = collect.ranked(collected.cvs, collect.selected(collected))
    best = next((cv for cv in ranked if not math.isnan(cv.score) and cv.state is TrialState.COMPLETE), None)
    rows: list[dict[str, Any]] = []
    n_runs, longest = 0, 0
    for cv in ranked:
        state = "best" if cv is best else str(cv.state) if cv.state in figures.CURVE_COLORS else "complete"
        for run in cv.table.iter_rows(named=True):
            if n_runs >= MAX_CURVE_RUNS or run["run_name"] not in dirs:
                break
            curve = [e for e in read_curve(dirs[run["run_name"]]) if isinstance(e.get(metric), (int, float))]
            if not curve:
                continue
            n_runs += 1
            longest = max(longest, len(curve))
            rows += [{"run_name": run["run_name"], "trial": cv.cv_name, "epoch": int(e["epoch"]) + 1,
                      "value": figures.clean(float(e[metric])), "state": state} for e in curve]  # fmt: skip
    if longest < 2:
        return None
    rows.sort(key=lambda r: r["state"] != "pruned")  # pruned curves first: drawn under the others
    ladder = Ladder.from_settings(plan.settings, len(plan.cvs))
    rungs = []
    if ladder is not None:
        epochs = sorted({e for b in range(ladder.brackets) for e in rung_epochs(ladder.min_epochs, ladder.eta,
                                                                                  ladder.max_epochs, b)[:-1]})
        rungs = [{"epoch": e, "label": f"rung at epoch {e}"} for e in epochs]  # fmt: skip
    note = (f" Dashed: the rungs (--pruner {ladder.pruner}, reduction factor {ladder.eta}); grey: runs of trials "
            "pruned at a rung." if ladder is not None else "")  # fmt: skip
    shown = f" The {MAX_CURVE_RUNS} runs of the best-ranked trials." if n_runs >= MAX_CURVE_RUNS else ""
    return Section(
        "Learning curves",
        para(f"{metric} after every epoch, one line per run (its curve.json); green: the best trial.{note}{shown}"),
        [Figure("learning-curves", "learning curves", figures.learning_curves(rows, rungs, metric))],
    )
