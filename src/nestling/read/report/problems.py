"""The section every tune and cv page ends with: failed, unstable, pruned and lost runs, with their errors."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from nestling.core.tree.run_state import RunState
from nestling.execute.search.trials import TrialState
from nestling.launch.base import plural
from nestling.read.report.html import MAX_ERROR_CHARS, MAX_TABLE_ROWS, html_table, para, td
from nestling.read.report.page import Section

if TYPE_CHECKING:

    from nestling.read.collect import CvSummary

PROBLEM_COLUMNS = ("run_name", "status", "is_unstable", "run_score", "attempt", "error")
TITLE = "Failed, unstable, pruned and lost runs"


def problems_section(cvs: list[CvSummary]) -> Section:
    """Failed, pruned, missing (not run or lost: `nestling status` tells which) and unstable runs, with errors."""
    rows = []
    for cv in cvs:
        for r in cv.table.iter_rows(named=True):
            if r["status"] != RunState.SUCCESS or r["is_unstable"]:
                rows.append(r)
    pruned = pruned_text(cvs)
    if not rows:
        ended = "every run that ran succeeded with a stable score" if pruned else "every run succeeded with a stable score"
        return Section(TITLE, (para(pruned) if pruned else "") + para(f"Nothing else: {ended}."))
    counts: dict[str, int] = {}
    for r in rows:
        key = "unstable" if r["status"] == RunState.SUCCESS else str(r["status"])
        counts[key] = counts.get(key, 0) + 1
    body = [para(pruned)] if pruned else []
    body.append(para(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) +
                ". Missing runs have no result: not run yet, running, or lost (see nestling status)."))  # fmt: skip
    lines = []
    for r in rows[:MAX_TABLE_ROWS]:
        error = str(r.get("error") or "")
        short = error[:MAX_ERROR_CHARS] + ("…" if len(error) > MAX_ERROR_CHARS else "")
        cells = [td(r["run_name"], "run_name"), td(r["status"], "status"), td("yes" if r["is_unstable"] else "",
                 "is_unstable"), td(r["run_score"], "run_score"), td(r.get("attempt"), "attempt"),
                 f'<td class="error-text">{html.escape(short)}</td>']  # fmt: skip
        lines.append(f"<tr>{''.join(cells)}</tr>")
    body.append(html_table("problems", list(PROBLEM_COLUMNS), lines))
    if len(rows) > MAX_TABLE_ROWS:
        body.append(para(f"… and {len(rows) - MAX_TABLE_ROWS} more (see run_infos.parquet)."))
    return Section(TITLE, "".join(body))


def pruned_text(cvs: list[CvSummary]) -> str:
    """`3 trials pruned (cv2 after 1 fold, ...): 5 runs never started; their scores are over the folds they ran.`"""
    pruned = [cv for cv in cvs if cv.state is TrialState.PRUNED]
    if not pruned:
        return ""
    names = ", ".join(f"{cv.cv_name} after {plural(cv.n_folds_done, 'fold')}" for cv in pruned[:20])
    more = f" and {len(pruned) - 20} more" if len(pruned) > 20 else ""
    never = sum(cv.n_pruned for cv in pruned)
    return (f"{plural(len(pruned), 'trial')} pruned ({names}{more}): {plural(never, 'run')} never started; a pruned "
            "trial's score is over the folds it ran, and it ranks below every complete trial.")  # fmt: skip
