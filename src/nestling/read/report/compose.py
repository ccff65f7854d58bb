"""`nestling report DIR`: one self-contained HTML page (plus a PNG per figure) for a tune, cv or run dir.

Written at the end of every `nestling cv`/`tune` and by the SLURM collector job (`collect --report`). Everything
is read from the tree: the tables are those collect writes to parquet (so the numbers on the page are the
parquet's), the timeline comes from run_result.json, the training curves from the CSV logs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nestling.core.errors import UsageError
from nestling.core.lazy import lazy_module
from nestling.core.tree import naming
from nestling.plan.store import find_plan_root
from nestling.read.provenance_lines import code_line, differing_line
from nestling.read.report.assets import javascript_bundle, write_if_changed, write_pngs
from nestling.read.report.cv_page import cv_page
from nestling.read.report.page import Page, render
from nestling.read.report.run_page import run_page
from nestling.read.report.tune_page import tune_page

if TYPE_CHECKING:

    from nestling.read import collect
    from nestling.read.collect import Collected
else:
    collect = lazy_module("nestling.read.collect")


def write_report(target: Path, collected: Collected | None = None, png: bool = True) -> Path:
    """Write `target`/report.html (a tune, cv or run dir, or a cv/run dir inside a tune) and, with `png`, its PNGs
    (most of the time; without them the PNGs of an earlier report are removed, as they would no longer match).

    A retrain's dir gets the page of its runs, and its tune's page is written again, now with the retrain (issue 21
    #4): that page, where a reader looks for the result of the tune, is the one returned.
    `collected` saves reading the results again when the caller just collected the same plan."""

    target = Path(target).resolve()
    root = find_plan_root(target)
    if collected is None or collected.plan.root.resolve() != root:
        collected = collect.collect(root, write=False)
    out = _write_page(target, collected, png)
    if collected.plan.kind == "retrain" and target == root:
        tune_root = find_plan_root(root.parent)
        return _write_page(tune_root, collect.collect(tune_root, write=False), png)
    return out


def _write_page(target: Path, collected: Collected, png: bool) -> Path:
    page = build_page(target, collected)
    page.provenance = provenance_note(collected)
    text = render(page, javascript_bundle(), pngs=png)
    out = naming.report_file(target)
    write_if_changed(out, text.encode())
    write_pngs(target, page.figures if png else [])
    return out


def provenance_note(collected: Collected) -> str:
    """The header's provenance: the plan's code (commit, uncommitted changes, snapshot), and whether its runs
    differ in what produced them."""
    parts = [code_line(collected.plan) or "", differing_line(collected) or ""]
    return ". ".join(p[0].upper() + p[1:] for p in parts if p)


def build_page(target: Path, collected: Collected) -> Page:
    plan = collected.plan
    root = plan.root.resolve()
    if target == root and plan.kind == "tune":
        return tune_page(collected)
    if target == root and plan.kind in ("cv", "retrain"):
        return cv_page(collected, collected.cvs[0], plan.cvs[0])
    if target == root:  # a single run's plan
        return run_page(collected, plan.cvs[0].runs[0])
    for planned, cv in zip(plan.cvs, collected.cvs, strict=True):
        if planned.dir == target:
            return cv_page(collected, cv, planned)
        for run in planned.runs:
            if run.dir == target:
                return run_page(collected, run)
    raise UsageError(
        f"{str(target)!r} is inside {plan.kind} {plan.name!r} but is not its dir or one of its cv or run dirs; "
        f"pass one of those (e.g. {root})"
    )
