"""`nestling report DIR`: one self-contained HTML page (plus a PNG per figure) for a tune, cv or run dir.

The page must open from disk on an air-gapped login node: no CDN, no server. Vega, Vega-Lite and vega-embed are
inlined once (vl_convert's bundle, ~900 KB, cached on disk per vl_convert version because bundling takes seconds);
the figures are Vega-Lite specs (figures.py) with their data inlined; PNGs come from vl_convert, offline, with no
browser. Written at the end of every `nestling cv`/`tune` and by the SLURM collector job (`collect --report`).

Everything is read from the tree: the tables are those collect.py writes to parquet (so the numbers on the page are
the parquet's), the timeline comes from run_result.json, the training curves from the CSV logs. Columns that later
versions add (mean/sem/lcb per trial, a `state` such as pruned, the retrain's final_infos.parquet) are shown when
present.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling import __version__
from nestling.core.errors import UsageError, strict_parser
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_atomic
from nestling.core.tree.run_result import read_result
from nestling.read.report import figures

if TYPE_CHECKING:
    import polars as pl

    from nestling.plan.model import CvPlan as PlannedCv
    from nestling.plan.model import PlannedRun
    from nestling.read.collect import Collected, CvSummary

TOP_CONFIGURATIONS = 10  # trials whose every fold x seed score is plotted
MAX_TABLE_ROWS = 500  # rows of a run table on the page (the parquet has them all)
MAX_ERROR_CHARS = 600
MEAN_SEM_COLUMNS = (("mean", "sem"), ("score_mean", "score_sem"), ("run_score_mean", "run_score_sem"))  # per-trial spread, when the tune table has it
GAP_S = 0.5  # idle time between two runs of a lane drawn as a gap
LOG_SPAN = 100.0  # positive values spanning more than two decades are plotted on a log axis


@dataclass(frozen=True)
class Figure:
    key: str  # DOM id and PNG file stem
    title: str
    spec: dict[str, Any]
    note: str = ""


@dataclass
class Section:
    title: str
    body: str = ""  # HTML: tables, text
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Page:
    title: str
    subtitle: str
    sections: list[Section]
    as_of: str = ""  # ", as of <the last result>": not the time of writing, so an unchanged tree gives the same page

    @property
    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]


# -- entry points -----------------------------------------------------------------------------------------------


def report_main(argv: list[str]) -> int:
    parser = strict_parser("nestling report", "write DIR/report.html (and a PNG per figure) for a tune, cv or run dir")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--no_png", action="store_true", help="only the HTML page (PNGs take most of the time)")
    args = parser.parse_args(argv)
    if not args.dir.exists():
        raise UsageError(f"{str(args.dir)!r} does not exist; pass a tune, cv or run directory")
    path = write_report(args.dir, png=not args.no_png)
    print(f"report: {path}")
    return 0


def write_report(target: Path, collected: Collected | None = None, png: bool = True) -> Path:
    """Write `target`/report.html (a tune, cv or run dir, or a cv/run dir inside a tune) and its PNGs.

    `collected` saves reading the results again when the caller just collected the same plan."""
    from nestling.plan.store import find_plan_root
    from nestling.read.collect import collect

    target = Path(target).resolve()
    root = find_plan_root(target)
    if collected is None or collected.plan.root.resolve() != root:
        collected = collect(root, write=False)
    page = build_page(target, collected)
    text = render(page, _javascript_bundle())
    out = naming.report_file(target)
    _write_if_changed(out, text.encode())
    if png:
        write_pngs(target, page.figures)
    return out


def build_page(target: Path, collected: Collected) -> Page:
    plan = collected.plan
    root = plan.root.resolve()
    if target == root and plan.kind == "tune":
        return _tune_page(collected)
    if target == root and plan.kind == "cv":
        return _cv_page(collected, collected.cvs[0], plan.cvs[0])
    if target == root:  # a single run's plan
        return _run_page(collected, plan.cvs[0].runs[0])
    for planned, cv in zip(plan.cvs, collected.cvs, strict=True):
        if planned.dir == target:
            return _cv_page(collected, cv, planned)
        for run in planned.runs:
            if run.dir == target:
                return _run_page(collected, run)
    raise UsageError(
        f"{str(target)!r} is inside {plan.kind} {plan.name!r} but is not its dir or one of its cv or run dirs; "
        f"pass one of those (e.g. {root})"
    )


# -- a tune -----------------------------------------------------------------------------------------------------


def _tune_page(collected: Collected) -> Page:
    from nestling.read.collect import ranked, tune_table

    plan = collected.plan
    frame = tune_table(collected.cvs)  # the table collect writes to tune_infos.parquet
    rows = {r["cv_name"]: r for r in frame.iter_rows(named=True)}
    order = _tune_order(collected, frame)
    states = {cv.cv_name: _trial_state(cv, rows.get(cv.cv_name, {})) for cv in collected.cvs}
    axes = _hp_axes(collected.cvs, plan.options)
    sections = [
        Section("Trials, ranked", _ranked_table(order, rows, axes, states, frame.columns)),
    ]
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
                _p("Log axes for log-distributed hyperparameters (from the space, or values spanning over two "
                   "decades). Trials without a score are not drawn."),  # fmt: skip
                [
                    Figure("score-vs-hparams", "score against each hyperparameter",
                           figures.score_vs_hparams(hp_rows, axes)),
                    Figure("parallel-coordinates", "parallel coordinates, coloured by score",
                           figures.parallel_coordinates(*_parallel_rows(collected.cvs, axes))),
                ],  # fmt: skip
            )
        )
    top = [cv for cv in ranked(collected.cvs) if _good_scores(cv)][:TOP_CONFIGURATIONS]
    if top:
        runs, summary = _top_rows(top)
        sections.append(
            Section(
                f"Top {len(top)} configurations: every fold x seed",
                _p("Points are single runs (colour: fold, shape: seed); the bar is the mean ± standard error "
                   "of the stable successful runs, the score that ranks the trials."),  # fmt: skip
                [Figure("top-configurations", "top configurations",
                        figures.top_configurations(runs, summary, [cv.cv_name or "" for cv in top]))],  # fmt: skip
            )
        )
    sections.append(
        Section(
            "Best so far",
            _p("Each trial's score in the order trials were drawn; the line is the best stable score so far."),
            [Figure("best-so-far", "best score so far", figures.best_so_far(_best_so_far_rows(collected.cvs,
                                                                                                 states)))],
        )  # fmt: skip
    )
    times = timeline(plan.runs)
    sections.append(_timeline_section(times))
    sections.append(_problems_section(collected.cvs))
    retrain = _retrain_section(plan.root)
    if retrain is not None:
        sections.append(retrain)
    best = next((cv for cv in ranked(collected.cvs) if not math.isnan(cv.score)), None)
    counts = collected.counts
    subtitle = (
        f"{len(collected.cvs)} trials, {sum(counts.values())} runs: {counts['success']} success, "
        f"{counts['failed']} failed, {counts['missing']} missing. "
        + (f"Best: {best.cv_name} with score {_num(best.score)}." if best else "No trial has a score.")
    )
    return Page(f"tune {plan.name}", subtitle + " " + _options_line(plan.options), sections, _as_of(times.last_end))


def _tune_order(collected: Collected, frame: pl.DataFrame) -> list[CvSummary]:
    """The ranking of the tune table: its `rank` column when it has one, else collect's by the tune's --select."""
    from nestling.read.collect import ranked, selected

    cvs = collected.cvs
    if "rank" in frame.columns:
        rank = dict(zip(frame.get_column("cv_name").to_list(), frame.get_column("rank").to_list(), strict=True))
        return sorted(cvs, key=lambda cv: (rank.get(cv.cv_name) is None, rank.get(cv.cv_name) or 0))
    return ranked(cvs, selected(collected))


def _trial_state(cv: CvSummary, row: dict[str, Any]) -> str:
    if row.get("state") == "pruned":  # adaptive search stopped it after some folds
        return "pruned"
    if cv.n_runs and cv.n_missing == cv.n_runs:
        return "missing"
    if cv.n_success == 0 or math.isnan(cv.score):
        return "failed"
    return "unstable" if cv.score_is_unstable else "ok"


def _hp_axes(cvs: list[CvSummary], options: dict[str, Any]) -> list[figures.Axis]:
    """The hyperparameters that vary between trials (all of them when none does), as plot axes."""
    keys: dict[str, None] = {}
    for cv in cvs:
        keys.update(dict.fromkeys(cv.hparams))
    varying = [k for k in keys if len({repr(cv.hparams.get(k)) for cv in cvs}) > 1] or list(keys)
    log_keys = _log_distributed(options)
    axes = []
    for i, key in enumerate(varying):
        values = [cv.hparams.get(key) for cv in cvs if cv.hparams.get(key) is not None]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        numeric = bool(values) and len(numbers) == len(values)
        log = numeric and min(numbers) > 0 and (key in log_keys or _spans_decades(numbers))
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
    return '""' if value == "" else _num(value)


def _spans_decades(values: list[float]) -> bool:
    low, high = min(values), max(values)
    return low > 0 and high / low > LOG_SPAN


def _log_distributed(options: dict[str, Any]) -> set[str]:
    """Keys of the tune's space with a log distribution, read from its file (--hpconfig, else --config's table).

    Empty when the file is gone or unreadable: then only the span of the values decides."""
    from nestling.core.ml.space import SPACE_TABLE
    from nestling.core.options import config_files as files

    source = (options.get("tune") or {}).get("hpconfig") or options.get("config_file")
    if not source:
        return set()
    try:
        data = files.read(Path(source))
    except Exception:  # moved, edited, unreadable: the report must still be written
        return set()
    table = data.get(SPACE_TABLE) if isinstance(data, dict) else None
    if not isinstance(table, dict):
        return set()
    return {
        str(k) for k, spec in table.items()
        if isinstance(spec, dict) and str(spec.get("distribution", "")).lower() in ("loguniform", "log")
    }  # fmt: skip


def _ranked_table(
    order: list[CvSummary], rows: dict[Any, dict[str, Any]], axes: list[figures.Axis], states: dict[Any, str],
    columns: list[str],
) -> str:  # fmt: skip
    spread = next(((m, s) for m, s in MEAN_SEM_COLUMNS if m in columns and s in columns), None)
    head = ["rank", "trial", *[a.name for a in axes], "score"]
    head += ["mean ± sem"] if spread else []
    head += ["lcb"] if "lcb" in columns else []
    head += ["state", "runs", "failed"]
    body = []
    for rank, cv in enumerate(order, 1):
        row = rows.get(cv.cv_name, {})
        cells = [_td(rank), _td(cv.cv_name, "name")]
        cells += [_td(cv.hparams.get(a.name), a.name) for a in axes]
        cells.append(_td(row.get("score", cv.score), "score"))
        if spread:
            mean, sem = row.get(spread[0]), row.get(spread[1])
            cells.append(f'<td class="num" data-col="mean" data-value="{_attr(mean)}" data-sem="{_attr(sem)}">'
                         f"{_num(mean)} ± {_num(sem)}</td>")  # fmt: skip
        if "lcb" in columns:
            cells.append(_td(row.get("lcb"), "lcb"))
        cells += [_td(states[cv.cv_name], "state"), _td(row.get("n_runs", cv.n_runs), "n_runs"),
                  _td(row.get("n_failed", cv.n_failed), "n_failed")]  # fmt: skip
        body.append(f'<tr class="state-{html.escape(states[cv.cv_name])}">{"".join(cells)}</tr>')
    return _table("ranked", head, body)


def _good_scores(cv: CvSummary) -> list[tuple[dict[str, Any], float]]:
    """The runs the cv score is the mean of (stable, successful, finite score), with their score."""
    return [
        (r, r["run_score"]) for r in cv.table.iter_rows(named=True)
        if r["status"] == "success" and not r["is_unstable"] and r["run_score"] is not None
        and math.isfinite(r["run_score"])
    ]  # fmt: skip


def _mean_sem(values: list[float]) -> tuple[float, float]:
    mean = math.fsum(values) / len(values)
    sem = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, sem


def _top_rows(top: list[CvSummary]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    runs, summary = [], []
    for cv in top:
        for r in cv.table.iter_rows(named=True):
            if r["run_score"] is not None and math.isfinite(r["run_score"]):
                runs.append({"trial": cv.cv_name, "run_score": r["run_score"], "fold": r["fold"], "seed": r["seed"],
                             "run_name": r["run_name"]})  # fmt: skip
        mean, sem = _mean_sem([s for _, s in _good_scores(cv)])
        summary.append({"trial": cv.cv_name, "mean": mean, "sem": sem, "lo": mean - sem, "hi": mean + sem,
                        "n": len(_good_scores(cv))})  # fmt: skip
    return runs, summary


def _parallel_rows(
    cvs: list[CvSummary], axes: list[figures.Axis]
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """Every trial's position on each axis, normalised to [0, 1] (log10 first on log axes, categories evenly)."""
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
    ends: dict[tuple[str, float], str] = {}
    categorical = {a.name for a in axes if not a.numeric}
    for row in rows:  # every category, and the lowest and highest number, labelled beside its axis
        if row["axis"] in categorical or row["pos"] in (0.0, 1.0, 0.5):
            ends[(row["axis"], row["pos"])] = row["label"]
    return rows, names, [{"axis": a, "pos": p, "label": label} for (a, p), label in ends.items()]


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


def _retrain_section(root: Path) -> Section | None:
    """The retrain's test metrics (final_infos.parquet of the tune's retrain cv), when one ran."""
    import polars as pl

    found = naming.final_infos_files(root)
    if not found:
        return None
    body = []
    for path in found:
        frame = pl.read_parquet(path)
        body.append(f"<h3>{html.escape(path.parent.name)}</h3>")
        body.append(_frame_table(f"final-{path.parent.name}", frame))
    return Section("Retrain: test metrics", "".join(body))


# -- a cv -------------------------------------------------------------------------------------------------------


def _cv_page(collected: Collected, cv: CvSummary, planned: PlannedCv) -> Page:
    plan = collected.plan
    table = cv.table
    metrics = [c for c in table.columns if "/" in c]
    unstable = " (unstable: not every run succeeded with a stable score)" if cv.score_is_unstable else ""
    sections = [
        Section("Runs", _p(f"cv score {_num(cv.score)}{unstable}; {cv.n_success} success, {cv.n_failed} failed, "
                           f"{cv.n_missing} missing of {cv.n_runs} runs.")  # fmt: skip
                + _frame_table("runs", table.select(["run_name", "fold", "seed", "status", "duration", *metrics,
                                                       "run_score"]))),  # fmt: skip
    ]
    aggregates = _by_fold_and_seed(table, [*metrics, "run_score"])
    if aggregates:
        sections.append(Section("Per fold and per seed (means)", aggregates))
    rows = [
        {"metric": name, "fold": r["fold"], "seed": r["seed"], "value": figures.clean(r[name]),
         "run_name": r["run_name"]}
        for r in table.iter_rows(named=True) for name in [*metrics, "run_score"]
        if r[name] is not None and math.isfinite(r[name])
    ]  # fmt: skip
    if rows:
        shown = [m for m in [*metrics, "run_score"] if any(r["metric"] == m for r in rows)]
        sections.append(Section("Metrics of every fold and seed", "", [
            Figure("metrics-by-fold", "metrics by fold and seed", figures.metrics_by_fold(rows, shown))]))
    times = timeline(planned.runs)
    sections.append(_timeline_section(times))
    sections.append(_problems_section([cv]))
    where = f" in tune {plan.name}" if plan.kind == "tune" else ""
    return Page(f"cv {cv.cv_name}{where}", f"hyperparameters {_hp_text(cv.hparams)}. {_options_line(plan.options)}",
                sections, _as_of(times.last_end))  # fmt: skip


def _by_fold_and_seed(table: pl.DataFrame, metrics: list[str]) -> str:
    import polars as pl

    ok = table.filter(pl.col("status") == "success")
    if ok.height == 0:
        return ""
    out = []
    for key in ("fold", "seed"):
        agg = ok.group_by(key).agg([pl.col(m).mean() for m in metrics] + [pl.len().alias("runs")]).sort(key)
        out.append(f"<h3>by {key}</h3>" + _frame_table(f"by-{key}", agg))
    return "".join(out)


# -- a run ------------------------------------------------------------------------------------------------------


def _run_page(collected: Collected, run: PlannedRun) -> Page:
    plan = collected.plan
    result = read_result(run.dir) or {}
    metrics = result.get("metrics") or {}
    facts = {
        "status": result.get("status") or "missing", "fold": run.fold, "seed": run.seed,
        "attempt": result.get("attempt"), "duration (s)": result.get("duration"), "host": result.get("host"),
        "started": result.get("started_at"), "finished": result.get("finished_at"),
        "checkpoint": result.get("checkpoint"),
    }  # fmt: skip
    body = _pairs_table("result", {**facts, **metrics})
    if result.get("error"):
        body += f'<h3>error</h3><pre class="error-text">{html.escape(str(result["error"]))}</pre>'
    sections = [Section("Result", body)]
    rows, names = _curve_rows(run.dir)
    if rows:
        sections.append(Section("Training curves", _p("From the CSV logs of every attempt (logs/attempt-N/metrics.csv)."),
                                [Figure("training-curves", "training curves", figures.training_curves(rows, names))]))  # fmt: skip
    else:
        sections.append(Section("Training curves", _p("No CSV logs in this run dir (yet).")))
    return Page(f"run {run.run_name}-{run.run_id}", f"hyperparameters {_hp_text(result.get('hparams') or {})}. "
                f"{_options_line(plan.options)}", sections, _as_of(_timestamp(result.get("finished_at"))))  # fmt: skip


def _curve_rows(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Long rows (metric, step, epoch, value, attempt) from every attempt's Lightning CSV log."""
    import csv

    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    logs = naming.RunPaths(run_dir).logs
    for path in sorted(logs.glob("attempt-*/metrics.csv")):
        attempt = path.parent.name.removeprefix("attempt-")
        with open(path, newline="") as f:
            for line in csv.DictReader(f):
                step, epoch = _float(line.get("step")), _float(line.get("epoch"))
                for key, raw in line.items():
                    if key in ("step", "epoch") or raw in (None, ""):
                        continue
                    value = _float(raw)
                    if value is None:
                        continue
                    names[key] = None
                    rows.append({"metric": key, "step": step, "epoch": epoch, "value": value, "attempt": attempt})
    return rows, sorted(names, key=lambda n: (not n.startswith("val"), n))


def _float(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# -- shared sections --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    runs: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    lanes: list[str]
    busy_s: float
    span_s: float
    idle_s: float
    last_end: float | None = None  # seconds since the epoch

    @property
    def utilisation(self) -> float:
        return self.busy_s / (self.span_s * len(self.lanes)) if self.span_s > 0 and self.lanes else math.nan


def timeline(runs: Iterable[PlannedRun]) -> Timeline:
    """Every run with a result on its lane (host + GPU, else host + SLURM task, else host + process), the idle gaps
    between consecutive runs of a lane, and the utilisation: busy time / (lanes x first start to last end)."""
    spans: list[tuple[str, float, float, dict[str, Any], str]] = []
    for run in runs:
        result = read_result(run.dir)
        if not result or not result.get("started_at"):
            continue
        start, end = _span(run.dir, result)
        if start is None or end is None:
            continue
        spans.append((_lane(result), start, max(end, start), result, f"{run.run_name}-{run.run_id}"))
    if not spans:
        return Timeline([], [], [], 0.0, 0.0, 0.0)
    spans.sort(key=lambda s: (s[0], s[1]))
    rows: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    busy_per_lane: dict[str, float] = {}
    previous: dict[str, float] = {}
    for lane, start, end, result, name in spans:
        rows.append({"lane": lane, "start": start * 1000, "end": end * 1000, "status": result.get("status"),
                     "run_name": name, "duration": end - start})  # fmt: skip
        busy_per_lane[lane] = busy_per_lane.get(lane, 0.0) + (end - start)
        if lane in previous and start - previous[lane] >= GAP_S:
            gaps.append({"lane": lane, "start": previous[lane] * 1000, "end": start * 1000,
                         "idle_s": start - previous[lane]})  # fmt: skip
        previous[lane] = max(end, previous.get(lane, end))
    first, last = min(s[1] for s in spans), max(s[2] for s in spans)
    span = last - first
    labels = {lane: f"{lane} · {100 * min(1.0, busy / span):.0f}%" if span > 0 else lane
              for lane, busy in busy_per_lane.items()}  # fmt: skip
    for row in (*rows, *gaps):
        row["lane"] = labels[row["lane"]]
    return Timeline(rows, gaps, [labels[k] for k in sorted(labels)], sum(busy_per_lane.values()), span,
                    sum(g["idle_s"] for g in gaps), last)  # fmt: skip


def _span(run_dir: Path, result: dict[str, Any]) -> tuple[float | None, float | None]:
    """(start, end) in seconds since the epoch. started_at/finished_at have one-second resolution, which turns a
    tune of short runs into a bar code; run_result.json's mtime is the end to the nanosecond, so it is used when it
    agrees with finished_at (a copied tree's mtimes do not), and start = end - duration."""
    start, end = _timestamp(result.get("started_at")), _timestamp(result.get("finished_at"))
    duration = result.get("duration")
    if end is not None and isinstance(duration, (int, float)):
        try:
            mtime = os.stat(naming.RunPaths(run_dir).result).st_mtime
        except OSError:
            mtime = None
        if mtime is not None and -0.5 <= mtime - end < 2.0:
            return mtime - float(duration), mtime
        if start is not None:
            return start, start + float(duration)
    return start, end


def _lane(result: dict[str, Any]) -> str:
    host = str(result.get("host") or "?")
    if result.get("cuda_visible_devices"):
        return f"{host} GPU {result['cuda_visible_devices']}"
    if result.get("slurm_job_id"):
        task = result.get("slurm_array_task_id")
        return f"{host} job {result['slurm_job_id']}" + (f"_{task}" if task is not None else "")
    return f"{host} pid {result.get('pid')}"


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return float(value) if isinstance(value, (int, float)) else None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _as_of(last: float | None) -> str:
    if last is None:
        return ""
    return ", as of the last result " + dt.datetime.fromtimestamp(last).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _timeline_section(t: Timeline) -> Section:
    if not t.runs:
        return Section("Timeline", _p("No run has started yet."))
    largest = max(t.gaps, key=lambda g: g["idle_s"], default=None)
    text = (
        f"{len(t.runs)} runs on {len(t.lanes)} lane{'s' if len(t.lanes) != 1 else ''} (worker process, SLURM task "
        f"or GPU) over "
        f"{_duration(t.span_s)}: busy {_duration(t.busy_s)}, utilisation {_pct(t.utilisation)} of lanes x span "
        f"(each lane's share after its name). Idle gaps between runs: {_duration(t.idle_s)}"
        + (f", the largest {_duration(largest['idle_s'])} on {largest['lane']}." if largest else ".")
    )
    note = ("Lanes are worker processes (local), array tasks (SLURM) or GPUs. A lane that starts late or ends early "
            "(a task that waited in the queue, a restarted worker) shows as a lower share; the time a worker spends "
            "starting up before its first run is not on the chart.")  # fmt: skip
    return Section("Timeline: where the allocation went", _p(text) + _p(note, "note"),
                   [Figure("timeline", "timeline of every run", figures.timeline(t.runs, t.gaps, t.lanes))])  # fmt: skip


PROBLEM_COLUMNS = ("run_name", "status", "is_unstable", "run_score", "attempt", "error")


def _problems_section(cvs: list[CvSummary]) -> Section:
    """Failed, pruned, missing (not run or lost: `nestling status` tells which) and unstable runs, with errors."""
    rows = []
    for cv in cvs:
        for r in cv.table.iter_rows(named=True):
            if r["status"] != "success" or r["is_unstable"]:
                rows.append(r)
    if not rows:
        return Section("Failed, unstable, pruned and lost runs", _p("None: every run succeeded with a stable score."))
    counts: dict[str, int] = {}
    for r in rows:
        key = "unstable" if r["status"] == "success" else str(r["status"])
        counts[key] = counts.get(key, 0) + 1
    body = [_p(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) +
               ". Missing runs have no result: not run yet, running, or lost (see nestling status).")]  # fmt: skip
    lines = []
    for r in rows[:MAX_TABLE_ROWS]:
        error = str(r.get("error") or "")
        short = error[:MAX_ERROR_CHARS] + ("…" if len(error) > MAX_ERROR_CHARS else "")
        cells = [_td(r["run_name"], "run_name"), _td(r["status"], "status"), _td("yes" if r["is_unstable"] else "",
                 "is_unstable"), _td(r["run_score"], "run_score"), _td(r.get("attempt"), "attempt"),
                 f'<td class="error-text">{html.escape(short)}</td>']  # fmt: skip
        lines.append(f"<tr>{''.join(cells)}</tr>")
    body.append(_table("problems", list(PROBLEM_COLUMNS), lines))
    if len(rows) > MAX_TABLE_ROWS:
        body.append(_p(f"… and {len(rows) - MAX_TABLE_ROWS} more (see run_infos.parquet)."))
    return Section("Failed, unstable, pruned and lost runs", "".join(body))


# -- HTML -------------------------------------------------------------------------------------------------------


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _attr(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return html.escape("" if value is None else str(value), quote=True)


def _td(value: Any, col: str = "") -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    cls = ' class="num"' if numeric else ""
    data = f' data-col="{html.escape(col, quote=True)}" data-value="{_attr(value)}"' if col else ""
    return f"<td{cls}{data}>{html.escape(_num(value))}</td>"


def _table(table_id: str, head: list[str], rows: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<div class="scroll"><table id="{table_id}"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _frame_table(table_id: str, frame: pl.DataFrame) -> str:
    rows = [
        "<tr>" + "".join(_td(r[c], c) for c in frame.columns) + "</tr>"
        for r in frame.head(MAX_TABLE_ROWS).iter_rows(named=True)
    ]
    more = _p(f"… and {frame.height - MAX_TABLE_ROWS} more rows.") if frame.height > MAX_TABLE_ROWS else ""
    return _table(table_id, list(frame.columns), rows) + more


def _pairs_table(table_id: str, pairs: dict[str, Any]) -> str:
    return _table(table_id, ["", "value"], [f"<tr><th>{html.escape(k)}</th>{_td(v, k)}</tr>" for k, v in pairs.items()])


def _p(text: str, cls: str = "") -> str:
    return f'<p{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{html.escape(text)}</p>'


def _hp_text(hparams: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_num(v)}" for k, v in hparams.items()) or "(task defaults)"


def _options_line(options: dict[str, Any]) -> str:
    data, cv, training = options.get("data") or {}, options.get("cv") or {}, options.get("training") or {}
    scoring = " ".join(cv.get("scoring_metric") or [])
    return (f"Task {data.get('task')}, {data.get('n_folds', '?')} folds ({data.get('fold_method', '?')}), scoring "
            f"{scoring or '(task default)'} ({cv.get('multi_score_strategy')}), max_epochs "
            f"{training.get('max_epochs')}.")  # fmt: skip


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"


def _script_json(obj: Any) -> str:
    """JSON inside a <script>: `<` escaped so that no value can close the tag."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1280px;padding:0 24px 48px;
color:#222}
h1{font-size:24px;margin:24px 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}.sub{color:#555;margin:0 0 12px}.note{color:#666;font-size:12px}
nav a{margin-right:14px}.scroll{overflow-x:auto;max-height:640px;overflow-y:auto}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{padding:3px 9px;border-bottom:1px solid #eee;
text-align:left;white-space:nowrap}thead th{position:sticky;top:0;background:#f6f6f6}td.num{text-align:right;
font-variant-numeric:tabular-nums}tr.state-failed td,tr.state-missing td{color:#999}.error-text{white-space:pre-wrap;
font-family:ui-monospace,monospace;font-size:12px;color:#a11}figure{margin:12px 0}figcaption{color:#555;
font-size:12px}#report-errors:empty{display:none}#report-errors{background:#fee;border:1px solid #c00;padding:8px}
"""

ERROR_HOOK = """
window.reportError=function(m){var e=document.getElementById('report-errors');if(e){var d=document.createElement('div');
d.textContent=String(m);e.appendChild(d);}};
window.addEventListener('error',function(ev){reportError(ev.message||ev);});
window.addEventListener('unhandledrejection',function(ev){reportError(ev.reason);});
"""

EMBED = """
(function(){var specs=JSON.parse(document.getElementById('report-specs').textContent);
Object.keys(specs).forEach(function(id){
vegaEmbed('#fig-'+id,specs[id],{renderer:'svg',actions:{export:true,source:false,compiled:false,editor:false}})
.then(function(){document.getElementById('fig-'+id).setAttribute('data-rendered','1');})
.catch(function(err){console.error(err);reportError(id+': '+err);});});})();
"""


def render(page: Page, bundle: str) -> str:
    """The page: CSS, the error hook, the Vega bundle, the sections, then the specs and the embed script."""
    toc = "".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(page.sections))
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(page.title)}</title><style>{CSS}</style>",
        f"<script>{ERROR_HOOK}</script><script>{bundle}</script></head><body>",
        f"<h1>{html.escape(page.title)}</h1><p class=\"sub\">{html.escape(page.subtitle)}</p>",
        f'<p class="note">nestling {__version__} report{page.as_of}; the figures are also in '
        f"{naming.REPORT_FIGURES}/ as PNG.</p>",
        '<div id="report-errors"></div>',
        f"<nav>{toc}</nav>",
    ]
    for i, section in enumerate(page.sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>{section.body}')
        for fig in section.figures:
            png = f"{naming.REPORT_FIGURES}/{fig.key}.png"
            parts.append(f'<figure><div class="figure" id="fig-{fig.key}"></div><figcaption>'
                         f'{html.escape(fig.title)} (<a href="{png}">PNG</a>){" " + html.escape(fig.note) if fig.note else ""}'
                         "</figcaption></figure>")  # fmt: skip
        parts.append("</section>")
    specs = {fig.key: fig.spec for fig in page.figures}
    parts.append(f'<script type="application/json" id="report-specs">{_script_json(specs)}</script>')
    parts.append(f"<script>{EMBED}</script></body></html>\n")
    return "".join(parts)


# -- the Vega bundle and the PNGs -------------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nestling"


def _javascript_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one script. vl_convert bundles them in ~3 s, so the result is kept on disk
    per vl_convert version (a read-only home just bundles every time)."""
    import vl_convert

    version = getattr(vl_convert, "__version__", "unknown")
    path = _cache_dir() / f"vega-bundle-{version}.js"
    try:
        return path.read_text()
    except OSError:
        pass
    bundle: str = vl_convert.javascript_bundle()  # type: ignore[call-arg]  # default snippet: vegaEmbed on window
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, bundle)
    except OSError as exc:
        print(f"nestling: could not cache the Vega bundle in {path}: {exc}", file=sys.stderr)
    return bundle


def _write_if_changed(path: Path, data: bytes) -> None:
    """The report of an unchanged tree is the same bytes; leaving the files alone keeps a second collect or a
    resume with nothing to do from touching the tree."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomic(path, data)


def write_pngs(target: Path, figs: list[Figure]) -> list[Path]:
    """One PNG per figure, rendered by vl_convert (no browser); PNGs of figures no longer on the page are removed."""
    import vl_convert

    written = []
    for fig in figs:
        path = naming.report_figure(target, fig.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_if_changed(path, vl_convert.vegalite_to_png(fig.spec, scale=1.5))
        written.append(path)
    folder = naming.report_figures_dir(target)
    if folder.is_dir():
        for stale in set(folder.glob("*.png")) - set(written):
            stale.unlink(missing_ok=True)
    return written
