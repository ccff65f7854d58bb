"""The page of one run: its result and its training curves from the CSV logs."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.tree import naming
from nestling.core.tree.run_result import read_result
from nestling.core.tree.run_state import RunState
from nestling.read.report import figures
from nestling.read.report.html import hp_text, options_line, pairs_table, para
from nestling.read.report.page import Figure, Page, Section
from nestling.read.report.timeline import as_of, timestamp

if TYPE_CHECKING:

    from nestling.plan.model import PlannedRun
    from nestling.read.collect import Collected


FACTS = (
    ("attempt", "attempt"), ("duration (s)", "duration"), ("host", "host"), ("started", "started_at"),
    ("finished", "finished_at"), ("checkpoint", "checkpoint"),
)  # fmt: skip  (the result table's rows: label, RunResult field)


def run_page(collected: Collected, run: PlannedRun) -> Page:
    plan = collected.plan
    result = read_result(run.dir)
    facts = {
        "status": result.status if result is not None else RunState.MISSING, "fold": run.fold, "seed": run.seed,
        **{label: getattr(result, name, None) for label, name in FACTS},  # blank without a result
        **(result.metrics if result is not None else {}),
    }  # fmt: skip
    body = pairs_table("result", facts)
    if result is not None and result.error:
        body += f'<h3>error</h3><pre class="error-text">{html.escape(result.error)}</pre>'
    sections = [Section("Result", body)]
    rows, names = _curve_rows(run.dir)
    if rows:
        sections.append(Section("Training curves", para("From the CSV logs of every attempt (logs/attempt-N/metrics.csv)."),
                                [Figure("training-curves", "training curves", figures.training_curves(rows, names))]))  # fmt: skip
    else:
        sections.append(Section("Training curves", para("No CSV logs in this run dir (yet).")))
    hparams = result.hparams if result is not None else {}
    finished = timestamp(result.finished_at) if result is not None else None
    return Page(f"run {run.run_name}-{run.run_id}", f"hyperparameters {hp_text(hparams)}. "
                f"{options_line(plan.settings)}", sections, as_of(finished))  # fmt: skip


def _curve_rows(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Long rows (metric, step, epoch, value, attempt) from every attempt's Lightning CSV log."""
    import csv

    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    for path in naming.RunPaths(run_dir).csv_logs():
        attempt = path.parent.name.removeprefix(naming.ATTEMPT_LOG_PREFIX)
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
