"""run_result.json files -> run_infos.parquet per cv, and tune_infos.parquet + run_infos.parquet per tune.

Idempotent and atomic: every parquet file is rebuilt whole from the results and renamed into place, so running the
collector twice, or two collectors at once, never leaves a torn or duplicated table. Runs without a result are
rows with status "missing" (the status command tells pending, running and lost apart).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from nestling import naming
from nestling.artifacts import PlannedCv, PlanOnDisk, find_plan_root, load_plan
from nestling.records import read_result
from nestling.scoring import cv_score, parse_scoring_metrics, run_score

MISSING = "missing"
BASE_COLUMNS = [
    "run_name", "run_id", "fold", "seed", "status", "error", "duration", "checkpoint", "is_unstable", "run_score",
    "score", "score_is_unstable", "attempt",
]  # fmt: skip
# `score` and `score_is_unstable` are the cv's (same value on every row, as the seed specifies); `run_score` is the
# row's own score, from which the cv score is the mean over stable successful runs.


@dataclass(frozen=True)
class CvSummary:
    cv_name: str | None
    hp_index: int | None
    hparams: dict[str, Any]
    score: float
    score_is_unstable: bool
    n_runs: int
    n_success: int
    n_failed: int
    n_missing: int
    table: pl.DataFrame


@dataclass(frozen=True)
class Collected:
    plan: PlanOnDisk
    cvs: list[CvSummary]

    @property
    def counts(self) -> dict[str, int]:
        return {
            "success": sum(c.n_success for c in self.cvs),
            "failed": sum(c.n_failed for c in self.cvs),
            "missing": sum(c.n_missing for c in self.cvs),
        }


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def collect(path: Path, write: bool = True) -> Collected:
    """Rebuild the parquet tables of the plan that holds `path` (a tune, cv or run dir)."""
    plan = load_plan(find_plan_root(Path(path)))
    scoring = parse_scoring_metrics(plan.options["cv"]["scoring_metric"])
    strategy = plan.options["cv"]["multi_score_strategy"]
    cvs = [_collect_cv(cv, scoring, strategy) for cv in plan.cvs]
    if write and plan.kind in ("cv", "tune"):
        for cv in cvs:
            cv_dir = next(c.dir for c in plan.cvs if c.cv_name == cv.cv_name)
            write_parquet_atomic(cv.table, cv_dir / naming.RUN_INFOS)
    if write and plan.kind == "tune":
        write_parquet_atomic(tune_table(cvs), plan.root / naming.TUNE_INFOS)
        write_parquet_atomic(tune_runs_table(cvs), plan.root / naming.RUN_INFOS)
    return Collected(plan=plan, cvs=cvs)


def _collect_cv(cv: PlannedCv, scoring: Any, strategy: str) -> CvSummary:
    rows: list[dict[str, Any]] = []
    metric_names: list[str] = []
    for run in cv.runs:
        result = read_result(run.dir)
        row: dict[str, Any] = {
            "run_name": run.run_name,
            "run_id": run.run_id,
            "fold": run.fold,
            "seed": run.seed,
            "status": MISSING,
            "error": None,
            "duration": None,
            "checkpoint": None,
            "attempt": None,
            "metrics": {},
        }
        if result is not None:
            row.update(
                status=result.get("status") or MISSING,
                error=result.get("error"),
                duration=result.get("duration"),
                checkpoint=result.get("checkpoint"),
                attempt=result.get("attempt"),
                metrics=result.get("metrics") or {},
            )
        score, unstable = run_score(row["metrics"], scoring, strategy)
        row.update(run_score=score, is_unstable=unstable)
        for name in row["metrics"]:
            if name not in metric_names:
                metric_names.append(name)
        rows.append(row)
    score, score_is_unstable = cv_score([(r["run_score"], r["is_unstable"], r["status"]) for r in rows])
    for r in rows:
        r.update(score=score, score_is_unstable=score_is_unstable)
    columns: dict[str, list[Any]] = {c: [r[c] for r in rows] for c in BASE_COLUMNS}
    for name in metric_names:
        columns[name] = [_float(r["metrics"].get(name)) for r in rows]
    schema = {
        "run_name": pl.Utf8, "run_id": pl.Utf8, "fold": pl.Int64, "seed": pl.Int64, "status": pl.Utf8,
        "error": pl.Utf8, "duration": pl.Float64, "checkpoint": pl.Utf8, "is_unstable": pl.Boolean,
        "run_score": pl.Float64, "score": pl.Float64, "score_is_unstable": pl.Boolean, "attempt": pl.Int64,
        **dict.fromkeys(metric_names, pl.Float64),
    }  # fmt: skip
    table = pl.DataFrame(columns, schema=schema)
    statuses = [r["status"] for r in rows]
    return CvSummary(
        cv_name=cv.cv_name,
        hp_index=cv.hp_index,
        hparams=cv.hparams,
        score=score,
        score_is_unstable=score_is_unstable,
        n_runs=len(rows),
        n_success=statuses.count("success"),
        n_failed=statuses.count("failed"),
        n_missing=statuses.count(MISSING),
        table=table,
    )


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _hp_columns(cvs: list[CvSummary]) -> list[str]:
    keys: list[str] = []
    for cv in cvs:
        for k in cv.hparams:
            if k not in keys:
                keys.append(k)
    return keys


def tune_table(cvs: list[CvSummary]) -> pl.DataFrame:
    hp_keys = _hp_columns(cvs)
    rows = [
        {
            "cv_name": cv.cv_name,
            "hp_index": cv.hp_index,
            **{k: cv.hparams.get(k) for k in hp_keys},
            "score": cv.score,
            "score_is_unstable": cv.score_is_unstable,
            "n_runs": cv.n_runs,
            "n_failed": cv.n_failed,
        }
        for cv in cvs
    ]
    return pl.DataFrame(rows, infer_schema_length=None, strict=False)


def tune_runs_table(cvs: list[CvSummary]) -> pl.DataFrame:
    hp_keys = _hp_columns(cvs)
    frames = []
    for cv in cvs:
        extra = [pl.lit(cv.cv_name).alias("cv_name")]
        extra += [pl.lit(cv.hparams.get(k)).alias(k) for k in hp_keys if k not in cv.table.columns]
        frames.append(cv.table.with_columns(extra))
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed")


def ranked(cvs: list[CvSummary]) -> list[CvSummary]:
    """Trials best first: stable before unstable, then by score (NaN last)."""
    return sorted(cvs, key=lambda c: (math.isnan(c.score), c.score_is_unstable, -(c.score if not math.isnan(c.score) else 0)))
