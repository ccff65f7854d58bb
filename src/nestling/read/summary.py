"""Tables printed at the end of a run/cv/tune and by `nestling collect` (rich)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from nestling.core.host import tracking
from nestling.core.tree.run_result import read_result
from nestling.launch.base import plural
from nestling.read.collect import Collected, CvSummary, ranked, selected
from nestling.read.provenance import differing_line


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def status_target(collected: Collected) -> Path:
    """What `nestling status` should be pointed at: a single run's own dir, else the plan root."""
    plan = collected.plan
    if plan.kind == "run" and plan.cvs and plan.cvs[0].runs:
        return plan.cvs[0].runs[0].dir
    return plan.root


def error_line(error: Any) -> str:
    """The first line of a run's error (the exception and its message), at most 300 characters."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else text)[:300]


def error_groups(collected: Collected) -> list[tuple[str, int]]:
    """Each distinct error of the failed runs once, with how many runs it hit; most frequent first."""
    errors = Counter(
        error_line(e) for cv in collected.cvs for e in cv.table.get_column("error").to_list() if e
    )
    return errors.most_common()


NAME_WIDTH = 28  # a name column never takes more; the rest of a terminal line is for the numbers


def short_name(name: str, parent: str | None, width: int = NAME_WIDTH) -> str:
    """A cv or run name as a table shows it: the part after its parent's name (`…-cv3`, `…-run-f0s42`: the title
    names the parent), else cut from the middle so that both ends, which tell names apart, stay."""
    if parent and name.startswith(parent) and len(name) > len(parent):
        name = "…" + name[len(parent) :]
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head) :]



def scoring_names(collected: Collected) -> list[str]:
    return [m.name for m in collected.plan.settings.scoring()]


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


def print_summary(collected: Collected, select: str | None = None, all_columns: bool = False) -> None:
    """The tables after a plan ended. `select` overrides the plan's --select (score | lcb) for the ranking and the
    best trial. By default a cv's table has the scoring metrics only, so that it fits a terminal; `all_columns`
    (`nestling collect DIR --all`) adds every logged metric."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    plan = collected.plan
    counts = collected.counts
    scoring = scoring_names(collected)
    if plan.kind == "tune":
        select = selected(collected, select)
        cvs = ranked(collected.cvs, select)
        hp_keys = sorted({k for cv in cvs for k in cv.hparams})
        varying = [k for k in hp_keys if len({repr(cv.hparams.get(k)) for cv in cvs}) > 1] or hp_keys
        table = Table(title=f"tune {plan.name}: trials ranked by {select}")
        for col in ["rank", "cv_name", *varying, "score", "mean ± sem", "lcb", "unstable", "runs", "failed"]:
            table.add_column(col, no_wrap=col == "cv_name")
        for rank, cv in enumerate(cvs, 1):
            table.add_row(
                str(rank),
                short_name(str(cv.cv_name), plan.name),
                *[_fmt(cv.hparams.get(k)) for k in varying],
                _fmt(cv.score),
                _mean_sem(cv),
                _fmt(cv.spread.lcb),
                "yes" if cv.score_is_unstable else "",
                str(cv.n_runs),
                str(cv.n_failed),
            )
        console.print(table)
        notes = [(rank, cv) for rank, cv in enumerate(cvs, 1) if cv.score_is_unstable and cv.unstable_reason]
        for rank, cv in notes[:10]:  # why a trial is unstable: which run, which metric, which value
            console.print(
                f"unstable #{rank} {cv.cv_name}: {cv.unstable_reason}", markup=False, highlight=False, soft_wrap=True
            )
        if len(notes) > 10:
            console.print(f"... {len(notes) - 10} more unstable trials: see unstable_reason in tune_infos.parquet")
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
            logged = [c for c in df.columns if "/" in c]
            shown = logged if all_columns or plan.kind == "retrain" else [c for c in scoring if c in df.columns]
            metric_cols = [c for c in shown if not (plan.kind == "retrain" and c.startswith("train"))]
            cols = ["run_name", "status", "duration", *metric_cols, "run_score"]
            for col in cols:
                table.add_column(col, no_wrap=col == "run_name")
            for row in df.iter_rows(named=True):
                cells = [_fmt(row.get(c)) for c in cols]
                cells[0] = short_name(cells[0], cv.cv_name or plan.name)
                table.add_row(*cells)
            console.print(table)
            hidden = len(logged) - len(metric_cols)
            if hidden > 0:
                console.print(
                    f"{plural(hidden, 'more metric')} in run_infos.parquet; all columns: nestling collect {plan.root} --all",
                    markup=False, highlight=False, soft_wrap=True,
                )  # fmt: skip
            if plan.kind == "cv":
                unstable = ""
                if cv.score_is_unstable:
                    unstable = f" (unstable: {cv.unstable_reason})" if cv.unstable_reason else " (unstable)"
                console.print(
                    f"score {_fmt(cv.score)}{unstable}; table: {plan.root / 'run_infos.parquet'}",
                    markup=False, highlight=False, soft_wrap=True,
                )  # fmt: skip
            if plan.kind == "retrain":
                console.print(test_score_line(cv) + f"; table: {plan.root / 'final_infos.parquet'}")
    console.print("runs: " + ", ".join(f"{n} {state}" for state, n in counts.items()))  # success, failed, missing
    differ = differing_line(collected)  # e.g. some runs ran in another image, or on a node with other packages
    if differ:
        console.print(differ, markup=False, highlight=False, soft_wrap=True)
    groups = error_groups(collected)
    for error, n in groups:  # why the runs failed, each reason once (the traceback is in the run's error.txt)
        console.print(f"{plural(n, 'run')}: {error}", markup=False, highlight=False, soft_wrap=True)
    if groups:
        console.print(f"see nestling status {status_target(collected)}", markup=False, soft_wrap=True)
    hint = offline_hint(collected)
    if hint:
        console.print(hint, markup=False, highlight=False, soft_wrap=True)


def offline_hint(collected: Collected) -> str | None:
    """One line, when runs of this plan logged to W&B offline and are not uploaded yet: why, and how to upload."""
    if not collected.plan.settings.wandb_project:
        return None
    run_dirs = [run.dir for cv in collected.plan.cvs for run in cv.runs]
    pending = tracking.unsynced_offline_runs(run_dirs)
    if not pending:
        return None
    result = read_result(pending[0].parent.parent)
    why = f" ({result.wandb_reason})" if result is not None and result.wandb_reason else ""
    return (
        f"W&B: {len(pending)} offline runs not uploaded yet{why}; upload them from a machine with network "
        f"(a login node): nestling sync {collected.plan.root}"
    )
