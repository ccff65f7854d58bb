"""The page of one run: its result and its training curves from the CSV logs."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.tree import naming
from nestling.core.tree.run_result import read_result
from nestling.read.report import figures
from nestling.read.report.html import hp_text, options_line, pairs_table, para
from nestling.read.report.page import Figure, Page, Section
from nestling.read.report.timeline import as_of, timestamp

if TYPE_CHECKING:

    from nestling.plan.model import PlannedRun
    from nestling.read.collect import Collected


def run_page(collected: Collected, run: PlannedRun) -> Page:
    plan = collected.plan
    result = read_result(run.dir) or {}
    metrics = result.get("metrics") or {}
    facts = {
        "status": result.get("status") or "missing", "fold": run.fold, "seed": run.seed,
        "attempt": result.get("attempt"), "duration (s)": result.get("duration"), "host": result.get("host"),
        "started": result.get("started_at"), "finished": result.get("finished_at"),
        "checkpoint": result.get("checkpoint"),
    }  # fmt: skip
    body = pairs_table("result", {**facts, **metrics})
    if result.get("error"):
        body += f'<h3>error</h3><pre class="error-text">{html.escape(str(result["error"]))}</pre>'
    sections = [Section("Result", body)]
    rows, names = _curve_rows(run.dir)
    if rows:
        sections.append(Section("Training curves", para("From the CSV logs of every attempt (logs/attempt-N/metrics.csv)."),
                                [Figure("training-curves", "training curves", figures.training_curves(rows, names))]))  # fmt: skip
    else:
        sections.append(Section("Training curves", para("No CSV logs in this run dir (yet).")))
    return Page(f"run {run.run_name}-{run.run_id}", f"hyperparameters {hp_text(result.get('hparams') or {})}. "
                f"{options_line(plan.options)}", sections, as_of(timestamp(result.get("finished_at"))))  # fmt: skip


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
                step, epoch = _finite_or_none(line.get("step")), _finite_or_none(line.get("epoch"))
                for key, raw in line.items():
                    if key in ("step", "epoch") or raw in (None, ""):
                        continue
                    value = _finite_or_none(raw)
                    if value is None:
                        continue
                    names[key] = None
                    rows.append({"metric": key, "step": step, "epoch": epoch, "value": value, "attempt": attempt})
    return rows, sorted(names, key=lambda n: (not n.startswith("val"), n))


def _finite_or_none(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
