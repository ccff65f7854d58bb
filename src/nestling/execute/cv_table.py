"""One cv's run_infos table from its run results, and writing it only when its inputs changed.

The collector (collect.py) builds every cv's table this way; a worker that finished a cv's last run writes that cv's
run_infos.parquet at once (issue 15 #5), so that the final collect of a large tune rewrites only what changed since.
A small stamp file beside each parquet (naming.run_infos_stamp) records what the table was built from: plan.json's
and every result file's (mtime_ns, size), and the parquet's own. The table is rewritten when any of them (or a file's inode) differs, so
an edited, deleted or re-run result, a resumed plan, or a parquet touched by hand all lead to a fresh table, and a
collector that is interrupted leaves, at worst, a table that the next collect rewrites.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from nestling.core.ml.scoring import Spread, cv_score, cv_spread, parse_scoring_metrics, run_score_reason
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_json
from nestling.core.tree.run_epochs import StopReason
from nestling.plan.model import CvPlan
from nestling.plan.store import load_plan

STAMP_VERSION = 2  # bump when the table's columns or their meaning change: every stamp is then stale
# (st_mtime_ns, st_size, st_ino) of a file, None when it does not exist. The inode too: every atomic write renames
# a new file into place, so a rewrite within one tick of the file system's clock, at the same size, still shows.
Stamp = tuple[int, int, int] | None

MISSING = "missing"
BASE_COLUMNS = [
    "run_name", "run_id", "fold", "seed", "status", "error", "duration", "checkpoint", "is_unstable",
    "unstable_reason", "run_score", "score", "score_is_unstable", "attempt", "worker_startup_s", "accelerator",
    "device_names", "peak_memory_bytes", "cuda_visible_devices", "epochs_trained", "stop_reason",
]  # fmt: skip
# `score` and `score_is_unstable` are the cv's (same value on every row, as the seed specifies); `run_score` is the
# row's own score, from which the cv score is the mean over stable successful runs. `unstable_reason` says why a
# run is unstable: the metric and its value (see scoring.py), "failed", or "no result". `stop_reason` says why a
# successful run's training ended: completed, early_stopped, paused (at a rung, --pruner asha|hyperband) or pruned
# (paused, and its trial was stopped there).


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
    unstable_reason: str | None = None  # why score_is_unstable: the first unstable run and its reason
    spread: Spread = Spread(math.nan, math.nan, math.nan)  # of the run scores the cv score averages
    inputs: tuple[Stamp, ...] = ()  # the stamp of each run's result file, in plan order
    state: str = "complete"  # complete | pruned | failed | paused (a tune's trial, see study.py and rungs.py)
    n_folds_done: int = 0  # folds, from the first, whose every run has a result
    drawn_at: int | None = None  # order in which the trial's configuration was drawn
    n_epochs_done: int = 0  # epochs trained by all the trial's runs together
    rung: int | None = None  # --pruner asha|hyperband: the highest rung the trial reached (0 = the first)
    bracket: int | None = None  # --pruner hyperband: the trial's bracket (0 with asha)


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # a cv none of whose runs started has no dir yet
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_RESULT_COLUMNS = (
    "status", "error", "duration", "checkpoint", "attempt", "worker_startup_s", "accelerator", "device_names",
    "peak_memory_bytes", "cuda_visible_devices",
)  # fmt: skip  (what ran where: issue 15 #4)


def _collect_cvs(
    planned: list[CvPlan],
    scoring: Any,
    strategy: str,
    pruned: set[int] | None = None,
    rungs: dict[int, tuple[int, int]] | None = None,
) -> list[CvSummary]:
    """Every cv's rows, column by column into ONE frame (no per-row dicts, one DataFrame build for the whole plan);
    each cv's table is a zero-copy slice of it with that cv's own metric columns. A pruned trial's runs that never
    started are left out: its table holds the runs that ran, its score is the score over the folds done. `rungs`
    (--pruner asha|hyperband): trial -> (highest rung reached, bracket)."""
    pruned = pruned or set()
    rungs = rungs or {}
    columns: dict[str, list[Any]] = {c: [] for c in BASE_COLUMNS}
    metrics: dict[
        str, list[float | None]
    ] = {}  # name -> one value per row so far (None where a run lacks it)
    bounds: list[tuple[int, int, list[str], tuple[float, bool], list[str], str | None]] = []
    spreads: list[Spread] = []
    stamps: list[tuple[Stamp, ...]] = []
    n = 0
    folds_done: list[int] = []
    epochs_done: list[int] = []
    paused: list[bool] = []
    for k, cv in enumerate(planned):
        cv_epochs, cv_paused = 0, False
        start = n
        cv_metric_names: dict[str, None] = {}
        per_run: list[tuple[float, bool, str]] = []
        reasons: list[str] = []
        cv_stamps: list[Stamp] = []
        unfinished_folds: set[int] = set()
        for run in cv.runs:
            found, stamp = read_result_stamped(run.dir)
            cv_stamps.append(stamp)
            result = found or {}
            if not result:
                unfinished_folds.add(run.fold)
                if k in pruned:
                    continue  # never started: its trial was pruned
            status = result.get("status") or MISSING
            values = result.get("metrics") or {}
            score, reason = run_score_reason(values, scoring, strategy)
            unstable = reason is not None
            if status != "success":
                reason = "failed" if status == "failed" else "no result" if status == MISSING else status
            columns["unstable_reason"].append(reason)
            if reason is not None:
                reasons.append(f"{run.run_name}: {reason}")
            columns["run_name"].append(run.run_name)
            columns["run_id"].append(run.run_id)
            columns["fold"].append(run.fold)
            columns["seed"].append(run.seed)
            columns["status"].append(status)
            for key in _RESULT_COLUMNS[1:]:
                columns[key].append(result.get(key))
            epochs = result.get("epochs_trained")
            stop = result.get("stop_reason") if status == "success" else None
            if stop == StopReason.PAUSED:
                stop = StopReason.PRUNED.value if k in pruned else stop
                cv_paused = cv_paused or k not in pruned
            columns["epochs_trained"].append(epochs)
            columns["stop_reason"].append(stop)
            cv_epochs += int(epochs or 0)
            columns["run_score"].append(score)
            columns["is_unstable"].append(unstable)
            per_run.append((score, unstable, status))
            for name, value in values.items():
                column = metrics.get(name)
                if column is None:
                    column = metrics[name] = [None] * n
                column.extend([None] * (n - len(column)))
                column.append(_float(value))
                cv_metric_names[name] = None
            n += 1
        folds_done.append(min(unfinished_folds, default=max((r.fold + 1 for r in cv.runs), default=0)))
        epochs_done.append(cv_epochs)
        paused.append(cv_paused)
        cv_result = cv_score(per_run)
        spreads.append(cv_spread(per_run))
        stamps.append(tuple(cv_stamps))
        columns["score"].extend([cv_result[0]] * (n - start))
        columns["score_is_unstable"].extend([cv_result[1]] * (n - start))
        cv_reason = None
        if reasons:
            more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
            cv_reason = reasons[0] + more
        bounds.append(
            (start, n - start, list(cv_metric_names), cv_result, [s for _, _, s in per_run], cv_reason)
        )
    for column in metrics.values():
        column.extend([None] * (n - len(column)))
    schema: dict[str, Any] = {
        "run_name": pl.Utf8, "run_id": pl.Utf8, "fold": pl.Int64, "seed": pl.Int64, "status": pl.Utf8,
        "error": pl.Utf8, "duration": pl.Float64, "checkpoint": pl.Utf8, "is_unstable": pl.Boolean,
        "unstable_reason": pl.Utf8, "run_score": pl.Float64, "score": pl.Float64, "score_is_unstable": pl.Boolean,
        "attempt": pl.Int64, "worker_startup_s": pl.Float64, "accelerator": pl.Utf8, "device_names": pl.List(pl.Utf8),
        "peak_memory_bytes": pl.Int64, "cuda_visible_devices": pl.Utf8, "epochs_trained": pl.Int64,
        "stop_reason": pl.Utf8, **dict.fromkeys(metrics, pl.Float64),
    }  # fmt: skip
    frame = pl.DataFrame({**columns, **metrics}, schema=schema)
    summaries = []
    for k, (cv, cv_spread_, inputs, (start, length, names, (score, score_is_unstable), statuses, reason)) in enumerate(
        zip(planned, spreads, stamps, bounds, strict=True)
    ):
        n_folds = max((r.fold + 1 for r in cv.runs), default=0)
        if k in pruned:
            state = "pruned"
        elif paused[k]:
            state = "paused"  # waits at a rung for its promotion (a tune still running, or interrupted)
        else:
            state = "complete" if folds_done[k] == n_folds and not math.isnan(score) else "failed"
        summaries.append(
            CvSummary(
                cv_name=cv.cv_name,
                hp_index=cv.hp_index,
                hparams=cv.hparams,
                score=score,
                score_is_unstable=score_is_unstable,
                n_runs=length,
                n_success=statuses.count("success"),
                n_failed=statuses.count("failed"),
                n_missing=statuses.count(MISSING),
                table=frame.slice(start, length)[[*BASE_COLUMNS, *names]],  # eager: no lazy query per cv
                unstable_reason=reason if score_is_unstable else None,
                spread=cv_spread_,
                inputs=inputs,
                state=state,
                n_folds_done=folds_done[k],
                n_epochs_done=epochs_done[k],
                rung=rungs[k][0] if k in rungs else None,
                bracket=rungs[k][1] if k in rungs else None,
            )
        )
    return summaries


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_result_stamped(run_dir: Path) -> tuple[dict[str, Any] | None, Stamp]:
    """records.read_result, plus the file's (mtime_ns, size) from the same open file: the stamp costs no extra
    system call per run. A result that cannot be parsed is None but keeps its stamp (it changes when rewritten)."""
    try:
        with open(os.path.join(run_dir, naming.RUN_RESULT), "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return None, None
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    try:
        return json.loads(data), stamp
    except ValueError:
        return None, stamp


def file_stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _stamp_record(plan_stamp: Stamp, inputs: tuple[Stamp, ...], parquet: Stamp) -> dict[str, Any]:
    return {"version": STAMP_VERSION, "plan": plan_stamp, "inputs": inputs, "parquet": parquet}


def _as_json(value: Any) -> Any:
    """Tuples as the lists JSON gives back, so a record compares equal to the one read from disk."""
    if isinstance(value, (tuple, list)):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value


def is_fresh(cv_dir: Path, plan_stamp: Stamp, inputs: tuple[Stamp, ...]) -> bool:
    """Was this cv's run_infos.parquet built from exactly these inputs, and is it still the file written then?"""
    try:
        with open(naming.run_infos_stamp(cv_dir), "rb") as f:
            recorded = json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return False
    parquet = file_stamp(cv_dir / naming.RUN_INFOS)
    if parquet is None:
        return False
    return bool(recorded == _as_json(_stamp_record(plan_stamp, inputs, parquet)))


def write_cv_table(cv_dir: Path, table: pl.DataFrame, plan_stamp: Stamp, inputs: tuple[Stamp, ...]) -> None:
    """The cv's run_infos.parquet, then its stamp (both atomic). Two writers of the same inputs write the same
    table; a stamp that does not match its parquet only makes the next collect rewrite the table."""
    path = cv_dir / naming.RUN_INFOS
    write_parquet_atomic(table, path)
    write_json(naming.run_infos_stamp(cv_dir), _stamp_record(plan_stamp, inputs, file_stamp(path)), compact=True)


@lru_cache(maxsize=4)
def _plan_index(root: str, plan_stamp: Stamp) -> tuple[Any, dict[str, int]]:
    """The plan (reloaded when plan.json changes) and, for each run dir, the index of its cv."""

    plan = load_plan(Path(root))
    where = {os.path.normpath(run.dir): i for i, cv in enumerate(plan.cvs) for run in cv.runs}
    return plan, where


FINAL = ("success", "failed")


def collect_finished_cv(root: Path, run_dir: Path) -> bool:
    """Called by a worker after a run ended: when every run of that run's cv has a final result, write the cv's
    run_infos.parquet now, so that the collect at the end of a large tune finds it fresh. True when written.
    Never raises: the final collect writes whatever this could not."""
    try:
        plan_stamp = file_stamp(root / naming.PLAN)
        plan, where = _plan_index(str(root), plan_stamp)
        if plan.kind not in ("cv", "tune", "retrain"):
            return False
        index = where.get(os.path.normpath(run_dir))
        if index is None:
            return False
        cv = plan.cvs[index]
        if not all(os.path.exists(os.path.join(run.dir, naming.RUN_RESULT)) for run in cv.runs):
            return False  # a stat per run, before reading any: most runs end with their cv unfinished

        scoring = parse_scoring_metrics(plan.options["cv"]["scoring_metric"])
        (summary,) = _collect_cvs([cv], scoring, plan.options["cv"]["multi_score_strategy"])
        statuses = summary.table.get_column("status").to_list()
        if any(status not in FINAL for status in statuses):
            return False
        write_cv_table(cv.dir, summary.table, plan_stamp, summary.inputs)
        return True
    except Exception:  # noqa: BLE001 - an optimisation only; the collector is the one that must succeed
        return False
