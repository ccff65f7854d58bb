"""Tables printed at the end of a run/cv/tune and by `nestling collect` (rich)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from nestling.core.host import tracking
from nestling.core.ml.bootstrap import P_BEST_UNCERTAIN
from nestling.core.tree.run_result import read_result
from nestling.core.tree.run_state import RunState
from nestling.launch.base import plural
from nestling.read.collect import Collected, CvSummary, ranked, selected
from nestling.read.console_table import Column, plus_minus, print_table, significant
from nestling.read.provenance_lines import differing_line


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


def test_score_line(cv: CvSummary) -> str:
    """A retrain's test score over its seeds: mean ± sem, with the std and the number of seeds."""
    spread = cv.spread
    sem = f" {plus_minus(spread.sem)} (sem; std {significant(spread.std, 2)}," if not math.isnan(spread.sem) else " ("
    return f"test score {significant(spread.mean)}{sem} {cv.n_success} of {plural(cv.n_runs, 'seed')})"


def runs_line(collected: Collected) -> str:
    """`runs: 20 success, 16 pruned (8 trials pruned)`: every planned run in one state; a state no run is in is not
    named, except success."""
    counts = collected.counts
    parts = [f"{n} {state}" for state, n in counts.items() if n or state == RunState.SUCCESS]
    pruned = collected.n_pruned_trials
    if pruned:
        parts[-1] += f" ({plural(pruned, 'trial')} pruned)" if counts[RunState.PRUNED] else ""
        if not counts[RunState.PRUNED]:
            parts.append(f"{plural(pruned, 'trial')} pruned")
    return "runs: " + ", ".join(parts)


def best_line(cv: CvSummary | None, select: str, collected: Collected) -> str:
    """The winner and its score, or why there is none (never `score nan`)."""
    if cv is None or math.isnan(cv.score):
        counts = collected.counts
        why = ", ".join(f"{n} {state}" for state, n in counts.items() if n and state != RunState.SUCCESS)
        return f"best ({select}): none; no trial has a score yet ({why or 'no runs'})"
    sem = plus_minus(cv.spread.sem_corrected)
    lcb = "" if math.isnan(cv.spread.lcb) else f", lcb {significant(cv.spread.lcb)}"
    return (
        f"best ({select}): {cv.cv_name} score {significant(cv.score)}{' ' + sem + ' (corrected sem)' if sem else ''}{lcb}; "
        f"hparams {cv.hparams}"
    )


def uncertain_choice_line(cv: CvSummary, collected: Collected) -> str | None:
    """One line when the winner is less likely than not the best (p_best < 0.5): the choice is noise-limited."""
    if math.isnan(cv.p_best) or cv.p_best >= P_BEST_UNCERTAIN:
        return None
    n_folds = collected.plan.n_folds
    return (
        f"the choice is uncertain: {cv.cv_name} is the best with probability {cv.p_best:.2f} (p_best, a paired "
        f"bootstrap over the {n_folds} folds); more folds (--n_folds) or seeds would tell the leaders apart, and "
        f"nestling retrain {collected.plan.root} --n_seeds 5 measures the chosen one on the test set"
    )


def _tune_columns(collected: Collected, cvs: list[CvSummary], select: str) -> list[Column]:
    """The ranked trials: rank, name, score and state stay longest, then the hyperparameters that vary (the first
    longest), sem, lcb and the counts; a column nothing is in (no unstable or failed run) is not shown."""
    plan = collected.plan
    hp_keys = sorted({k for cv in cvs for k in cv.hparams})
    varying = [k for k in hp_keys if len({repr(cv.hparams.get(k)) for cv in cvs}) > 1] or hp_keys
    columns = [
        Column("rank", [str(i) for i in range(1, len(cvs) + 1)], keep=100, numeric=True),
        Column("trial", [short_name(str(cv.cv_name), plan.name) for cv in cvs], keep=100),
        Column("score", [significant(cv.score) for cv in cvs], keep=95, numeric=True),
        Column("sem", [plus_minus(cv.spread.sem_corrected) for cv in cvs], keep=40),  # corrected: the one lcb uses
        Column("lcb", [significant(cv.spread.lcb) for cv in cvs], keep=85 if select == "lcb" else 30, numeric=True),
        Column("p_best", ["" if math.isnan(cv.p_best) else significant(cv.p_best, 2) for cv in cvs], keep=60,
               numeric=True),  # fmt: skip  (empty: the trial does not race, read/selection.py)
        Column("state", [str(cv.state) for cv in cvs], keep=90),
    ]
    columns[4:4] = [
        Column(k, [significant(cv.hparams.get(k), 3) for cv in cvs], keep=70 - i, numeric=True) for i, k in
        enumerate(varying)
    ]  # fmt: skip
    if any(cv.score_is_unstable for cv in cvs):
        columns.append(Column("unstable", ["yes" if cv.score_is_unstable else "" for cv in cvs], keep=80))
    columns.append(Column("runs", [str(cv.n_runs) for cv in cvs], keep=20, numeric=True))
    if any(cv.n_failed for cv in cvs):
        columns.append(Column("failed", [str(cv.n_failed) for cv in cvs], keep=25, numeric=True))
    return columns


def _cv_columns(collected: Collected, cv: CvSummary, all_columns: bool) -> tuple[list[Column], int]:
    """A cv's (or a retrain's) runs: name, status, the scoring (or test) metrics, run_score, duration; and how many
    logged metrics are not among them."""
    plan = collected.plan
    df = cv.table
    logged = [c for c in df.columns if "/" in c]
    shown = logged if all_columns or plan.kind == "retrain" else [c for c in scoring_names(collected) if c in df.columns]
    metrics = [c for c in shown if not (plan.kind == "retrain" and c.startswith("train"))]
    rows = list(df.iter_rows(named=True))
    columns = [
        Column("run_name", [short_name(str(r["run_name"]), cv.cv_name or plan.name) for r in rows], keep=100),
        Column("status", [str(r["status"]) for r in rows], keep=90),
        Column("duration", [significant(r["duration"], 3) for r in rows], keep=30, numeric=True),
        *[Column(m, [significant(r.get(m)) for r in rows], keep=70 - i, numeric=True) for i, m in enumerate(metrics)],
        Column("run_score", [significant(r["run_score"]) for r in rows], keep=95, numeric=True),
    ]  # fmt: skip
    return columns, len(logged) - len(metrics)


def print_summary(collected: Collected, select: str | None = None, all_columns: bool = False) -> None:
    """The tables after a plan ended, fitted to the terminal (console_table). `select` overrides the plan's --select
    (score | lcb) for the ranking and the best trial. By default a cv's table has the scoring metrics only;
    `all_columns` (`nestling collect DIR --all`) adds every logged metric."""
    from rich.console import Console

    console = Console()
    plan = collected.plan
    if plan.kind == "tune":
        select = selected(collected, select)
        cvs = ranked(collected.cvs, select)
        columns = _tune_columns(collected, cvs, select)
        print_table(console, f"tune {plan.name}: trials ranked by {select}", columns,
                    f"all columns: {plan.root / 'tune_infos.parquet'}")  # fmt: skip
        notes = [(rank, cv) for rank, cv in enumerate(cvs, 1) if cv.score_is_unstable and cv.unstable_reason]
        for rank, cv in notes[:10]:  # why a trial is unstable: which run, which metric, which value
            console.print(
                f"unstable #{rank} {cv.cv_name}: {cv.unstable_reason}", markup=False, highlight=False, soft_wrap=True
            )
        if len(notes) > 10:
            console.print(f"... {len(notes) - 10} more unstable trials: see unstable_reason in tune_infos.parquet")
        if cvs:
            console.print(best_line(cvs[0], select, collected), markup=False, highlight=False, soft_wrap=True)
            doubt = uncertain_choice_line(cvs[0], collected)
            if doubt:
                console.print(doubt, markup=False, highlight=False, soft_wrap=True)
        console.print(f"tables: {plan.root / 'tune_infos.parquet'}, {plan.root / 'run_infos.parquet'}",
                      markup=False, highlight=False, soft_wrap=True)  # fmt: skip
    else:
        for cv in collected.cvs:
            title = f"cv {cv.cv_name}" if cv.cv_name else f"run {plan.name}"
            columns, hidden = _cv_columns(collected, cv, all_columns)
            print_table(console, title, columns, f"all columns: {plan.root / 'run_infos.parquet'}")
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
                    f"score {significant(cv.score)}{unstable}; table: {plan.root / 'run_infos.parquet'}",
                    markup=False, highlight=False, soft_wrap=True,
                )  # fmt: skip
            if plan.kind == "retrain":
                console.print(test_score_line(cv) + f"; table: {plan.root / 'final_infos.parquet'}", markup=False,
                              highlight=False, soft_wrap=True)  # fmt: skip
    console.print(runs_line(collected), markup=False, highlight=False, soft_wrap=True)
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
    them = "them" if len(pending) > 1 else "it"
    return (
        f"W&B: {plural(len(pending), 'offline run')} not uploaded yet{why}; upload {them} from a machine with "
        f"network (a login node): nestling sync {collected.plan.root}"
    )
