"""Tables printed at the end of a run/cv/tune and by `nestling collect` (rich)."""

from __future__ import annotations

import math
from typing import Any

from nestling.collect import Collected, CvSummary, ranked, selected


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _mean_sem(cv: CvSummary) -> str:
    """mean ± sem of the run scores (the mean alone when there is no spread to show)."""
    mean, sem = cv.spread.mean, cv.spread.sem
    return _fmt(mean) if math.isnan(sem) else f"{_fmt(mean)} ± {_fmt(sem)}"


def test_score_line(cv: CvSummary) -> str:
    """A retrain's test score over its seeds: mean ± sem, with the std and the number of seeds."""
    spread = cv.spread
    return (
        f"test score {_fmt(spread.mean)} ± {_fmt(spread.sem)} (sem; std {_fmt(spread.std)}, "
        f"{cv.n_success} of {cv.n_runs} seeds)"
    )


def print_summary(collected: Collected, select: str | None = None) -> None:
    """`select` overrides the plan's --select (score | lcb) for the ranking and the best trial."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    plan = collected.plan
    counts = collected.counts
    if plan.kind == "tune":
        select = selected(collected, select)
        cvs = ranked(collected.cvs, select)
        hp_keys = sorted({k for cv in cvs for k in cv.hparams})
        varying = [k for k in hp_keys if len({repr(cv.hparams.get(k)) for cv in cvs}) > 1] or hp_keys
        table = Table(title=f"tune {plan.name}: trials ranked by {select}")
        for col in ["rank", "cv_name", *varying, "score", "mean ± sem", "lcb", "unstable", "runs", "failed"]:
            table.add_column(col)
        for rank, cv in enumerate(cvs, 1):
            table.add_row(
                str(rank),
                str(cv.cv_name),
                *[_fmt(cv.hparams.get(k)) for k in varying],
                _fmt(cv.score),
                _mean_sem(cv),
                _fmt(cv.spread.lcb),
                "yes" if cv.score_is_unstable else "",
                str(cv.n_runs),
                str(cv.n_failed),
            )
        console.print(table)
        if cvs:
            best = cvs[0]
            console.print(
                f"best ({select}): [bold]{best.cv_name}[/bold] score {_fmt(best.score)} "
                f"(mean ± sem {_mean_sem(best)}, lcb {_fmt(best.spread.lcb)}) hparams {best.hparams}"
            )
        console.print(f"tables: {plan.root / 'tune_infos.parquet'}, {plan.root / 'run_infos.parquet'}")
    else:
        for cv in collected.cvs:
            df = cv.table
            title = f"cv {cv.cv_name}" if cv.cv_name else f"run {plan.name}"
            table = Table(title=title)
            metric_cols = [c for c in df.columns if "/" in c]
            cols = ["run_name", "status", "duration", *metric_cols, "run_score"]
            for col in cols:
                table.add_column(col)
            for row in df.iter_rows(named=True):
                table.add_row(*[_fmt(row.get(c)) for c in cols])
            console.print(table)
            if plan.kind == "cv":
                unstable = " (unstable)" if cv.score_is_unstable else ""
                console.print(f"score {_fmt(cv.score)}{unstable}; table: {plan.root / 'run_infos.parquet'}")
            if plan.kind == "retrain":
                console.print(test_score_line(cv) + f"; table: {plan.root / 'final_infos.parquet'}")
    console.print(
        f"runs: {counts['success']} success, {counts['failed']} failed, {counts['missing']} missing"
    )
