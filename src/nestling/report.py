"""Tables printed at the end of a run/cv/tune and by `nestling collect` (rich)."""

from __future__ import annotations

import math
from typing import Any

from nestling import tracking
from nestling.collect import Collected, ranked
from nestling.records import read_result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def print_summary(collected: Collected) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    plan = collected.plan
    counts = collected.counts
    if plan.kind == "tune":
        cvs = ranked(collected.cvs)
        hp_keys = sorted({k for cv in cvs for k in cv.hparams})
        varying = [k for k in hp_keys if len({repr(cv.hparams.get(k)) for cv in cvs}) > 1] or hp_keys
        table = Table(title=f"tune {plan.name}: trials ranked by score")
        for col in ["rank", "cv_name", *varying, "score", "unstable", "runs", "failed"]:
            table.add_column(col)
        for rank, cv in enumerate(cvs, 1):
            table.add_row(
                str(rank),
                str(cv.cv_name),
                *[_fmt(cv.hparams.get(k)) for k in varying],
                _fmt(cv.score),
                "yes" if cv.score_is_unstable else "",
                str(cv.n_runs),
                str(cv.n_failed),
            )
        console.print(table)
        if cvs:
            best = cvs[0]
            console.print(
                f"best: [bold]{best.cv_name}[/bold] score {_fmt(best.score)} hparams {best.hparams}"
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
    console.print(
        f"runs: {counts['success']} success, {counts['failed']} failed, {counts['missing']} missing"
    )
    hint = offline_hint(collected)
    if hint:
        console.print(hint, markup=False, highlight=False, soft_wrap=True)


def offline_hint(collected: Collected) -> str | None:
    """One line, when runs of this plan logged to W&B offline and are not uploaded yet: why, and how to upload."""
    if not collected.plan.options.get("logging", {}).get("wandb_project"):
        return None
    run_dirs = [run.dir for cv in collected.plan.cvs for run in cv.runs]
    pending = tracking.unsynced_offline_runs(run_dirs)
    if not pending:
        return None
    result = read_result(pending[0].parent.parent) or {}
    why = f" ({result['wandb_reason']})" if result.get("wandb_reason") else ""
    return (
        f"W&B: {len(pending)} offline runs not uploaded yet{why}; upload them from a machine with network "
        f"(a login node): nestling sync {collected.plan.root}"
    )
