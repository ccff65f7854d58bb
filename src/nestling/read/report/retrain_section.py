"""The tune page's last section: its retrain (`nestling retrain`, `tune --retrain`), read from the retrain's plan and
final_infos.parquet: which trial was retrained with which hyperparameters, for how long, and its test metrics."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from nestling.core.tree import naming
from nestling.launch.base import plural
from nestling.plan.store import load_plan
from nestling.read.report.html import frame_table, hp_text, num, para
from nestling.read.report.page import Section

if TYPE_CHECKING:
    import polars as pl

    from nestling.plan.model import Plan


def retrain_section(tune: Plan) -> Section | None:
    """The retrain of `tune` when one wrote its final_infos.parquet; None otherwise."""
    import polars as pl

    found = naming.final_infos_files(tune.root)
    if not found:
        return None
    trial = {cv.hp_index: cv.cv_name for cv in tune.cvs}
    body = []
    for path in found:
        frame = pl.read_parquet(path)
        body.append(f"<h3>{html.escape(path.parent.name)}</h3>")
        try:
            plan = load_plan(path.parent)
        except Exception:  # an older or damaged retrain plan: its table is still worth showing
            plan = None
        if plan is not None and plan.cvs:
            cv = plan.cvs[0]
            seeds = len(cv.runs)
            body.append(para(
                f"Trial {trial.get(cv.hp_index, cv.hp_index)} retrained on every non-test sample for "
                f"{plural(plan.settings.max_epochs, 'epoch')} with {plural(seeds, 'seed')} "
                f"({hp_text(cv.hparams)}), then tested on the test split: {_test_score(frame)}."
            ))  # fmt: skip
        body.append(frame_table(f"final-{path.parent.name}", frame))
        page = naming.report_file(path.parent)
        if page.is_file():
            link = f"{path.parent.name}/{naming.REPORT}"
            body.append(f'<p>Its runs: <a href="{html.escape(link, quote=True)}">{html.escape(link)}</a>.</p>')
    return Section("Retrain: test metrics", "".join(body))


def _test_score(frame: pl.DataFrame) -> str:
    """`test score 0.83 ± 0.01 (sem)` from the mean and sem rows of final_infos, or why there is none."""
    rows = {r["row"]: r.get("run_score") for r in frame.iter_rows(named=True)}
    mean, sem = rows.get("mean"), rows.get("sem")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "no seed has a test score (see the table)"
    spread = "" if sem is None or math.isnan(sem) else f" ± {sem:.2g} (sem)"
    return f"test score {num(mean)}{spread}"
