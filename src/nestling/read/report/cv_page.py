"""The page of a cross-validation: its runs, metrics per fold and seed, timeline and problems."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from nestling.core.tree.run_state import RunState
from nestling.read.report import figures
from nestling.read.report.html import frame_table, hp_text, num, options_line, para
from nestling.read.report.page import Figure, Page, Section
from nestling.read.report.problems import problems_section
from nestling.read.report.timeline import as_of, timeline, timeline_section

if TYPE_CHECKING:
    import polars as pl

    from nestling.plan.model import CvPlan as PlannedCv
    from nestling.read.collect import Collected, CvSummary


def cv_page(collected: Collected, cv: CvSummary, planned: PlannedCv) -> Page:
    plan = collected.plan
    table = cv.table
    metrics = [c for c in table.columns if "/" in c]
    unstable = " (unstable: not every run succeeded with a stable score)" if cv.score_is_unstable else ""
    sections = [
        Section("Runs", para(f"cv score {num(cv.score)}{unstable}; {cv.n_success} success, {cv.n_failed} failed, "
                           f"{cv.n_missing} missing of {cv.n_runs} runs.")  # fmt: skip
                + frame_table("runs", table.select(["run_name", "fold", "seed", "status", "duration", *metrics,
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
    sections.append(timeline_section(times))
    sections.append(problems_section([cv]))
    where = f" in tune {plan.name}" if plan.kind == "tune" else ""
    return Page(f"cv {cv.cv_name}{where}", f"hyperparameters {hp_text(cv.hparams)}. {options_line(plan.settings)}",
                sections, as_of(times.last_end))  # fmt: skip


def _by_fold_and_seed(table: pl.DataFrame, metrics: list[str]) -> str:
    import polars as pl

    ok = table.filter(pl.col("status") == RunState.SUCCESS.value)
    if ok.height == 0:
        return ""
    out = []
    for key in ("fold", "seed"):
        agg = ok.group_by(key).agg([pl.col(m).mean() for m in metrics] + [pl.len().alias("runs")]).sort(key)
        out.append(f"<h3>by {key}</h3>" + frame_table(f"by-{key}", agg))
    return "".join(out)
