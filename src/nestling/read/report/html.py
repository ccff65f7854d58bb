"""HTML building blocks of the report's pages: cells, tables, paragraphs, numbers as the page prints them."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from nestling.plan.settings import PlanSettings

MAX_TABLE_ROWS = 500  # rows of a run table on the page (the parquet has them all)
MAX_ERROR_CHARS = 600


def num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def attr(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return html.escape("" if value is None else str(value), quote=True)


def td(value: Any, col: str = "") -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    cls = ' class="num"' if numeric else ""
    data = f' data-col="{html.escape(col, quote=True)}" data-value="{attr(value)}"' if col else ""
    return f"<td{cls}{data}>{html.escape(num(value))}</td>"


def html_table(table_id: str, head: list[str], rows: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<div class="scroll"><table id="{table_id}"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def frame_table(table_id: str, frame: pl.DataFrame) -> str:
    rows = [
        "<tr>" + "".join(td(r[c], c) for c in frame.columns) + "</tr>"
        for r in frame.head(MAX_TABLE_ROWS).iter_rows(named=True)
    ]
    more = para(f"… and {frame.height - MAX_TABLE_ROWS} more rows.") if frame.height > MAX_TABLE_ROWS else ""
    return html_table(table_id, list(frame.columns), rows) + more


def pairs_table(table_id: str, pairs: dict[str, Any]) -> str:
    return html_table(table_id, ["", "value"], [f"<tr><th>{html.escape(k)}</th>{td(v, k)}</tr>" for k, v in pairs.items()])


def para(text: str, cls: str = "") -> str:
    return f'<p{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{html.escape(text)}</p>'


def hp_text(hparams: dict[str, Any]) -> str:
    return ", ".join(f"{k}={num(v)}" for k, v in hparams.items()) or "(task defaults)"


def options_line(settings: PlanSettings) -> str:
    scoring = " ".join(settings.scoring_metric)
    combined = f" ({settings.multi_score_strategy})" if len(settings.scoring_metric) > 1 else ""  # one metric: none
    return (f"Task {settings.task}, {settings.n_folds} folds ({settings.fold_method}), scoring "
            f"{scoring or '(task default)'}{combined}, max_epochs {settings.max_epochs}.")


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"
