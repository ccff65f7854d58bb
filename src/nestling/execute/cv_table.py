"""One cv's run_infos table from its run results, and writing it only when its inputs changed.

The collector (collect.py) builds every cv's table this way; a worker that finished a cv's last run writes that cv's
run_infos.parquet at once (issue 15 #5), so that the final collect of a large tune rewrites only what changed since.
A small stamp file beside each parquet (naming.run_infos_stamp) records what the table was built from: plan.json's
and every result file's (mtime_ns, size), and the parquet's own. The table is rewritten when any of them (or a file's inode) differs, so
an edited, deleted or re-run result, a resumed plan, or a parquet touched by hand all lead to a fresh table, and a
collector that is interrupted leaves, at worst, a table that the next collect rewrites.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from nestling.core.ml.scoring import Spread, cv_score, cv_spread, run_score_reason
from nestling.core.provenance.record import RUN_FIELDS
from nestling.core.tree import damaged, naming, tables
from nestling.core.tree.atomic import write_atomic, write_json
from nestling.core.tree.run_result import RunResult, parse_result
from nestling.core.tree.run_state import RunState
from nestling.core.tree.stop_reason import StopReason
from nestling.execute.search.trials import TrialState
from nestling.plan.model import CvPlan
from nestling.plan.store import fold_val_train_ratios, load_plan

STAMP_VERSION = 2  # bump when the table's columns or their meaning change: every stamp is then stale
# (st_mtime_ns, st_size, st_ino) of a file, None when it does not exist. The inode too: every atomic write renames
# a new file into place, so a rewrite within one tick of the file system's clock, at the same size, still shows.
Stamp = tuple[int, int, int] | None

BASE_COLUMNS = list(tables.RUN_INFOS_COLUMNS)  # their dtypes: core/tree/tables.py
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
    table: pl.DataFrame  # the runs that ran or wait to: a pruned trial's runs that never started are not rows
    unstable_reason: str | None = None  # why score_is_unstable: the first unstable run and its reason
    spread: Spread = Spread(math.nan, math.nan, math.nan, math.nan)  # of the run scores the cv score averages
    inputs: tuple[Stamp, ...] = ()  # the stamp of each run's result file, in plan order
    state: TrialState = TrialState.COMPLETE  # complete | pruned | failed | paused (a tune's trial: study.py, rungs.py)
    n_folds_done: int = 0  # folds, from the first, whose every run has a result
    drawn_at: int | None = None  # order in which the trial's configuration was drawn
    n_pruned: int = 0  # planned runs that never started because the trial was pruned (not in `table`)
    n_epochs_done: int = 0  # epochs trained by all the trial's runs together
    rung: int | None = None  # --pruner asha|hyperband: the highest rung the trial reached (0 = the first)
    bracket: int | None = None  # --pruner hyperband: the trial's bracket (0 with asha)
    p_best: float = math.nan  # the probability that this trial is the best (read/selection.py); NaN: not racing


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    """The table serialised in memory, then written through atomic.write_atomic: a file system that is full raises
    the OSError (ENOSPC) it is, not the parquet writer's "transport error", and leaves nothing half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)  # a cv none of whose runs started has no dir yet
    buffer = io.BytesIO()
    df.write_parquet(buffer)
    write_atomic(path, buffer.getvalue())


CHECKPOINT_REMOVED = "removed"  # the checkpoint column of a run whose checkpoints --keep_checkpoints removed
_RESULT_COLUMNS = (
    "error", "duration", "checkpoint", "attempt", "worker_startup_s", "accelerator", "device_names",
    "peak_memory_bytes", "cuda_visible_devices", "failure_class", "stage_s", *RUN_FIELDS,
)  # fmt: skip  (RunResult fields copied as they are; what ran where: issue 15 #4; failure class, staging: issue 23;
#                what produced it: issue 24)


def _collect_cvs(
    planned: list[CvPlan],
    scoring: Any,
    strategy: str,
    pruned: set[int] | None = None,
    removed: set[int] | None = None,
    rungs: dict[int, tuple[int, int]] | None = None,
    val_train: Sequence[float] = (),
) -> list[CvSummary]:
    """Every cv's rows, column by column into ONE frame (no per-row dicts, one DataFrame build for the whole plan);
    each cv's table is a zero-copy slice of it with that cv's own metric columns. A pruned trial's runs that never
    started are left out: its table holds the runs that ran, its score is the score over the folds done. The
    `checkpoint` of a run of a `removed` trial (--keep_checkpoints) reads "removed". `rungs` (--pruner
    asha|hyperband): trial -> (highest rung reached, bracket)."""
    pruned = pruned or set()
    removed = removed or set()
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
    n_pruned: list[int] = []  # per cv: runs its pruning kept from starting
    epochs_done: list[int] = []
    paused: list[bool] = []
    success, missing = RunState.SUCCESS, RunState.MISSING  # (an enum member lookup costs ~0.3 us; once per run adds up)
    for k, cv in enumerate(planned):
        cv_epochs, cv_paused = 0, False
        start = n
        cv_pruned = 0
        cv_metric_names: dict[str, None] = {}
        per_run: list[tuple[float, bool, str]] = []
        ratios: list[float] = []
        reasons: list[str] = []
        cv_stamps: list[Stamp] = []
        unfinished_folds: set[int] = set()
        for run in cv.runs:
            result, stamp = read_result_stamped(run.dir)
            cv_stamps.append(stamp)
            if result is None:
                unfinished_folds.add(run.fold)
                if k in pruned:
                    cv_pruned += 1
                    continue  # never started: its trial was pruned
                status, values = missing, {}
            else:
                status, values = result.status, result.metrics
            score, reason = run_score_reason(values, scoring, strategy)
            unstable = reason is not None
            if status is not success:
                reason = "no result" if status is missing else status  # "failed"
            columns["unstable_reason"].append(reason)
            if reason is not None:
                reasons.append(f"{run.run_name}: {reason}")
            columns["run_name"].append(run.run_name)
            columns["run_id"].append(run.run_id)
            columns["fold"].append(run.fold)
            columns["seed"].append(run.seed)
            columns["status"].append(status)
            for key in _RESULT_COLUMNS:
                columns[key].append(None if result is None else getattr(result, key))
            if k in removed and columns["checkpoint"][-1]:
                columns["checkpoint"][-1] = CHECKPOINT_REMOVED
            epochs = None if result is None else result.epochs_trained
            stop = result.stop_reason if result is not None and status is success else None
            if stop is StopReason.PAUSED:
                stop = StopReason.PRUNED if k in pruned else stop
                cv_paused = cv_paused or k not in pruned
            columns["epochs_trained"].append(epochs)
            columns["stop_reason"].append(stop)
            cv_epochs += int(epochs or 0)
            columns["run_score"].append(score)
            columns["is_unstable"].append(unstable)
            per_run.append((score, unstable, status))
            ratios.append(val_train[run.fold] if run.fold < len(val_train) else math.nan)
            for name, value in values.items():
                column = metrics.get(name)
                if column is None:
                    column = metrics[name] = [None] * n
                column.extend([None] * (n - len(column)))
                column.append(_float_or_nan(value))
                cv_metric_names[name] = None
            n += 1
        n_pruned.append(cv_pruned)
        folds_done.append(min(unfinished_folds, default=max((r.fold + 1 for r in cv.runs), default=0)))
        epochs_done.append(cv_epochs)
        paused.append(cv_paused)
        cv_result = cv_score(per_run)
        spreads.append(cv_spread(per_run, ratios))
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
    schema: dict[str, Any] = {**tables.RUN_INFOS_COLUMNS, **dict.fromkeys(metrics, tables.METRIC)}
    frame = pl.DataFrame({**columns, **metrics}, schema=schema)
    summaries = []
    for k, (cv, cv_spread_, inputs, (start, length, names, (score, score_is_unstable), statuses, reason)) in enumerate(
        zip(planned, spreads, stamps, bounds, strict=True)
    ):
        n_folds = max((r.fold + 1 for r in cv.runs), default=0)
        if k in pruned:
            state = TrialState.PRUNED
        elif paused[k]:
            state = TrialState.PAUSED  # waits at a rung for its promotion (a tune still running, or interrupted)
        elif folds_done[k] == n_folds and not math.isnan(score):
            state = TrialState.COMPLETE
        else:
            state = TrialState.FAILED
        summaries.append(
            CvSummary(
                cv_name=cv.cv_name,
                hp_index=cv.hp_index,
                hparams=cv.hparams,
                score=score,
                score_is_unstable=score_is_unstable,
                n_runs=length,
                n_success=statuses.count(RunState.SUCCESS),
                n_failed=statuses.count(RunState.FAILED),
                n_missing=statuses.count(RunState.MISSING),
                n_pruned=n_pruned[k],
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


RankKey = tuple[bool, bool, bool, bool, float, float]
_PARTIAL = frozenset({TrialState.PRUNED, TrialState.PAUSED})  # scored on part of the folds or epochs


def rank_key(c: CvSummary, select: str = "score") -> RankKey:
    """Where a trial ranks (smaller first): stable before unstable, then by score, or by lcb with select="lcb" (NaN
    last, then by score); a pruned trial (scored on the folds, or at the rung, it reached) below every trial that
    ran them all, and so is a trial paused at a rung (an unfinished tune). One definition for the tables
    (read/collect.ranked) and for --keep_checkpoints, which ranks trials as they finish (checkpoint_keeping.py)."""
    value = c.spread.lcb if select == "lcb" else c.score
    score = 0 if math.isnan(c.score) else c.score
    # lcb is NaN with a single usable run: such trials follow the others, ranked by their score among themselves
    return (math.isnan(c.score), c.state in _PARTIAL, c.score_is_unstable, math.isnan(value),
            -(0 if math.isnan(value) else value), -score)  # fmt: skip


def _float_or_nan(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_result_stamped(run_dir: Path) -> tuple[RunResult | None, Stamp]:
    """run_result.read_result, plus the file's (mtime_ns, size, inode) from the same open file: the stamp costs no
    extra system call per run. A result that cannot be parsed is None but keeps its stamp (it changes when
    rewritten)."""
    path = os.path.join(run_dir, naming.RUN_RESULT)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return None, None
    result = parse_result(data)
    if result is None:
        damaged.unreadable_result(path, data)
    return result, (st.st_mtime_ns, st.st_size, st.st_ino)


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
def _plan_index(root: str, plan_stamp: Stamp) -> tuple[Any, dict[str, int], list[float]]:
    """The plan (reloaded when plan.json changes), for each run dir the index of its cv, and each fold's
    n_val/n_train."""

    plan = load_plan(Path(root))
    where = {os.path.normpath(run.dir): i for i, cv in enumerate(plan.cvs) for run in cv.runs}
    return plan, where, fold_val_train_ratios(Path(root))


def collect_finished_cv(root: Path, run_dir: Path) -> bool:
    """Called by a worker after a run ended: when every run of that run's cv has a final result, write the cv's
    run_infos.parquet now, so that the collect at the end of a large tune finds it fresh. True when written.
    Never raises: the final collect writes whatever this could not."""
    try:
        plan_stamp = file_stamp(root / naming.PLAN)
        plan, where, val_train = _plan_index(str(root), plan_stamp)
        if plan.kind not in ("cv", "tune", "retrain"):
            return False
        index = where.get(os.path.normpath(run_dir))
        if index is None:
            return False
        cv = plan.cvs[index]
        if not all(os.path.exists(os.path.join(run.dir, naming.RUN_RESULT)) for run in cv.runs):
            return False  # a stat per run, before reading any: most runs end with their cv unfinished

        settings = plan.settings
        (summary,) = _collect_cvs([cv], settings.scoring(), settings.multi_score_strategy, val_train=val_train)
        statuses = summary.table.get_column("status").to_list()
        if not all(RunState(status).is_recorded() for status in statuses):  # (the table's own values)
            return False
        write_cv_table(cv.dir, summary.table, plan_stamp, summary.inputs)
        return True
    except Exception:  # noqa: BLE001 - an optimisation only; the collector is the one that must succeed
        return False
