"""run_result.json files -> run_infos.parquet per cv, and tune_infos.parquet + run_infos.parquet per tune.

Idempotent and atomic: every parquet file is rebuilt whole from the results and renamed into place, so running the
collector twice, or two collectors at once, never leaves a torn or duplicated table. Runs without a result are
rows with status "missing" (the status command tells pending, running and lost apart).

A cv's table is written only when its inputs changed since it was last written (cvtable.is_fresh): the worker that
finished a cv's last run already wrote it, so the collect at the end of a tune of 1,000 cvs reads every result and
writes the two tune tables, not 1,002 files (issue 15 #5). The tables are the same as a collect from scratch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from nestling.core.ml.scoring import Spread, spread
from nestling.core.tree import naming, tables
from nestling.core.tree.run_state import RunState
from nestling.execute import checkpoint_keeping
from nestling.execute.cv_table import (  # noqa: F401  - re-exported: the collector's table model lives in execute/cv_table.py
    BASE_COLUMNS,
    CvSummary,
    _collect_cvs,
    file_stamp,
    is_fresh,
    rank_key,
    write_cv_table,
    write_parquet_atomic,
)
from nestling.execute.search.rungs import Board
from nestling.execute.search.study import Study, pruned_trials
from nestling.execute.search.trials import TrialState
from nestling.plan.model import CvPlan, Plan
from nestling.plan.store import find_plan_root, fold_val_train_ratios, load_plan
from nestling.read import selection
from nestling.read.provenance_lines import trial_code


@dataclass(frozen=True)
class Collected:
    plan: Plan
    cvs: list[CvSummary]
    optimism: float = math.nan  # a tune's: how much the winner's cv score overstates its true score (selection.py)

    @property
    def counts(self) -> dict[str, int]:
        """The plan's runs per state: success, failed, missing (no result) and pruned (never started: their trial
        was pruned; they are no rows of the tables). They sum to the runs planned."""
        return {
            RunState.SUCCESS: sum(c.n_success for c in self.cvs),
            RunState.FAILED: sum(c.n_failed for c in self.cvs),
            RunState.MISSING: sum(c.n_missing for c in self.cvs),
            RunState.PRUNED: sum(c.n_pruned for c in self.cvs),
        }

    @property
    def n_pruned_trials(self) -> int:
        return sum(cv.state is TrialState.PRUNED for cv in self.cvs)


WRITE_THREADS = 4  # per-cv parquet files written at once


def _write_all(tables: list[tuple[Path, CvSummary]], plan_stamp: Any) -> None:
    """One small parquet file (and its stamp) per changed cv: a first collect of 1,000 trials writes 1,000. polars
    and the file system release the GIL, so a few threads overlap the per-file latency; each file is still written
    atomically."""
    if len(tables) <= 4:
        for cv_dir, cv in tables:
            write_cv_table(cv_dir, cv.table, plan_stamp, cv.inputs)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        for _ in pool.map(lambda item: write_cv_table(item[0], item[1].table, plan_stamp, item[1].inputs), tables):
            pass


def collect(path: Path, write: bool = True) -> Collected:
    """Rebuild the parquet tables of the plan that holds `path` (a tune, cv or run dir)."""
    root = find_plan_root(Path(path))
    plan_stamp = file_stamp(root / naming.PLAN)
    plan = load_plan(root)
    removed = checkpoint_keeping.removed_trials(plan.root) if plan.kind == "tune" else set()
    cvs = _collect_cvs(_drawn_cvs(plan), plan.settings.scoring(), plan.settings.multi_score_strategy, _pruned(plan),
                       removed, _rungs(plan), fold_val_train_ratios(root))  # fmt: skip
    optimism = math.nan
    if plan.kind == "tune":
        cvs = _with_draw_order(plan, cvs)
        chosen = selection.select(cvs, plan.settings.tune_seed)
        cvs, optimism = chosen.cvs, chosen.optimism
    if write and plan.kind in ("cv", "tune", "retrain"):
        changed = [
            (planned.dir, cv)
            for planned, cv in zip(plan.cvs, cvs, strict=True)
            if cv.state is TrialState.PRUNED or not is_fresh(planned.dir, plan_stamp, cv.inputs)  # (a prune mark has no stamp)
        ]
        _write_all(changed, plan_stamp)
    if write and plan.kind == "tune":
        write_parquet_atomic(tune_table(cvs, plan.settings.select), plan.root / naming.TUNE_INFOS)
        write_parquet_atomic(tune_runs_table(cvs), plan.root / naming.RUN_INFOS)
    if write and plan.kind == "retrain":
        write_parquet_atomic(final_table(cvs[0]), plan.root / naming.FINAL_INFOS)
    return Collected(plan=plan, cvs=cvs, optimism=optimism)


FINAL_ROWS = ("mean", "std", "sem")


def final_table(cv: CvSummary) -> pl.DataFrame:
    """A retrain's result: one row per seed (`row` = "seed") with its status, run_score and test metrics, then
    rows "mean", "std" and "sem" of each over the successful runs (std with n - 1; NaN with fewer than two)."""
    table = cv.table
    metrics = [c for c in table.columns if c.startswith("test")]
    seeds = tables.conform(
        table.select(pl.lit("seed").alias("row"), "seed", "run_name", "status", "run_score", *metrics),
        tables.FINAL_INFOS_COLUMNS,
    )
    spreads = {column: _final_spread(cv, column) for column in ["run_score", *metrics]}
    rows = []
    for what in FINAL_ROWS:
        row: dict[str, Any] = {"row": what, "seed": None, "run_name": None, "status": None}
        row.update({column: getattr(values, what) for column, values in spreads.items()})
        rows.append(row)
    return pl.concat([seeds, pl.DataFrame(rows, schema=seeds.schema)])


def final_score(cv: CvSummary) -> Spread:
    """A retrain's test score: the mean, std and sem of its successful runs' scores (final_table's last rows)."""
    return _final_spread(cv, "run_score")


def _final_spread(cv: CvSummary, column: str) -> Spread:
    ok = cv.table.filter(pl.col("status") == RunState.SUCCESS.value)
    return spread([v for v in ok.get_column(column).to_list() if v is not None])


def _drawn_cvs(plan: Plan) -> list[CvPlan]:
    """The plan's cvs; in an adaptive tune with the configurations drawn at start (study.py) merged in."""
    if not plan.adaptive:
        return plan.cvs

    study = Study(plan)
    out = []
    for i, cv in enumerate(plan.cvs):
        drawn = study.trial(i).params or {}
        out.append(dataclasses.replace(cv, hparams={**cv.hparams, **drawn}))
    return out


def _pruned(plan: Plan) -> set[int]:
    if plan.kind != "tune":
        return set()

    return pruned_trials(plan.root)


def _rungs(plan: Plan) -> dict[int, tuple[int, int]]:
    """--pruner asha|hyperband: each trial's highest rung reached (-1: none yet) and its bracket."""
    if plan.kind != "tune":
        return {}
    board = Board.from_root(plan.root)
    if board is None:
        return {}
    return {t.index: (t.top, t.bracket) for t in board.trials()}


def _with_draw_order(plan: Plan, cvs: list[CvSummary]) -> list[CvSummary]:
    """drawn_at: the order of the draws (an adaptive tune's draw times; up front: the trial order)."""
    if not plan.adaptive:
        return [dataclasses.replace(cv, drawn_at=i) for i, cv in enumerate(cvs)]

    study = Study(plan)
    times = {i: study.trial(i).drawn_time for i in study.drawn_indices()}
    order = {i: k for k, i in enumerate(sorted(times, key=lambda i: (times[i] or 0.0, i)))}
    return [dataclasses.replace(cv, drawn_at=order.get(i)) for i, cv in enumerate(cvs)]


def _hp_columns(cvs: list[CvSummary]) -> list[str]:
    keys: list[str] = []
    for cv in cvs:
        for k in cv.hparams:
            if k not in keys:
                keys.append(k)
    return keys


def tune_table(cvs: list[CvSummary], select: str = "score") -> pl.DataFrame:
    """One row per trial in trial order, with the declared dtypes (core/tree/tables.py) whatever the data; `rank`
    is the trial's place in `ranked(cvs, select)`, the order the CLI and the report show."""
    hp_keys = _hp_columns(cvs)
    rank = {id(cv): i for i, cv in enumerate(ranked(cvs, select), 1)}
    codes = [trial_code(cv) for cv in cvs]
    columns: dict[str, pl.Series] = {
        "cv_name": pl.Series([cv.cv_name for cv in cvs], dtype=pl.String),
        "hp_index": pl.Series([cv.hp_index for cv in cvs], dtype=pl.Int64),
    }
    for key in hp_keys:
        values = [cv.hparams.get(key) for cv in cvs]
        dtype = tables.hparam_dtype(values)
        columns[key] = pl.Series(key, tables.hparam_values(values, dtype), dtype=dtype, strict=False)
    rest: dict[str, list[Any]] = {
        "score": [cv.score for cv in cvs],
        "score_is_unstable": [cv.score_is_unstable for cv in cvs],
        "unstable_reason": [cv.unstable_reason for cv in cvs],
        "run_score_mean": [cv.spread.mean for cv in cvs],
        "run_score_std": [cv.spread.std for cv in cvs],
        "run_score_sem": [cv.spread.sem for cv in cvs],
        "run_score_sem_corrected": [cv.spread.sem_corrected for cv in cvs],
        "lcb": [cv.spread.lcb for cv in cvs],
        "p_best": [cv.p_best for cv in cvs],
        "n_runs": [cv.n_runs for cv in cvs],
        "n_failed": [cv.n_failed for cv in cvs],
        "n_pruned": [cv.n_pruned for cv in cvs],
        "state": [str(cv.state) for cv in cvs],
        "n_folds_done": [cv.n_folds_done for cv in cvs],
        "n_epochs_done": [cv.n_epochs_done for cv in cvs],
        "rung": [cv.rung for cv in cvs],
        "bracket": [cv.bracket for cv in cvs],
        "drawn_at": [cv.drawn_at for cv in cvs],
        "rank": [rank[id(cv)] for cv in cvs],
        "code_commit": [commit for commit, _ in codes],
        "code_dirty": [dirty for _, dirty in codes],
    }
    for name, column in rest.items():
        columns[name] = pl.Series(name, column, dtype=tables.TUNE_INFOS_COLUMNS[name])
    return pl.DataFrame(columns)


def tune_runs_table(cvs: list[CvSummary]) -> pl.DataFrame:
    """Every run of every cv, with `cv_name` and the hyperparameter columns (the cv tables, diagonally concatenated);
    each hyperparameter column has the dtype tune_infos.parquet gives it (tables.hparam_dtype)."""
    if not cvs:
        return pl.DataFrame(schema=tables.TUNE_RUN_INFOS_COLUMNS)
    hp_keys = _hp_columns(cvs)
    fast = _tune_runs_fast(cvs, hp_keys)
    return fast if fast is not None else _tune_runs_per_cv(cvs, hp_keys)


def _hp_dtypes(cvs: list[CvSummary], hp_keys: list[str]) -> dict[str, Any]:
    return {key: tables.hparam_dtype([cv.hparams.get(key) for cv in cvs]) for key in hp_keys}


def _tune_runs_per_cv(cvs: list[CvSummary], hp_keys: list[str]) -> pl.DataFrame:
    """The general path (and the reference the fast one must equal): cv_name and hyperparameter columns added to
    each cv's table, the tables diagonally concatenated."""
    dtypes = _hp_dtypes(cvs, hp_keys)
    frames = []
    for cv in cvs:
        extra = [pl.lit(cv.cv_name, dtype=pl.String).alias("cv_name")]
        extra += [
            pl.lit(tables.hparam_values([cv.hparams.get(k)], dtypes[k])[0], dtype=dtypes[k]).alias(k)
            for k in hp_keys if k not in cv.table.columns
        ]  # fmt: skip
        frames.append(cv.table.with_columns(extra))
    return pl.concat(frames, how="diagonal_relaxed")


SCALARS = (type(None), bool, int, float, str)


def _tune_runs_fast(cvs: list[CvSummary], hp_keys: list[str]) -> pl.DataFrame | None:
    """The same table as the per-cv `with_columns(pl.lit(...))` + diagonal concat, built column-wise in one go
    (1,000 cvs: one frame instead of 1,000 lazy queries). None when a hyperparameter is not a plain scalar or is
    named like a column of the cv tables; the caller then takes the per-cv path."""
    order: dict[str, None] = {}
    for cv in cvs:
        order.update(dict.fromkeys(cv.table.columns))
        order["cv_name"] = None
        order.update(dict.fromkeys(k for k in hp_keys if k not in cv.table.columns))
    metric_or_base = {c for cv in cvs for c in cv.table.columns}
    if any(k in metric_or_base for k in hp_keys):
        return None
    if any(type(cv.hparams.get(k)) not in SCALARS for cv in cvs for k in hp_keys):
        return None
    columns: dict[str, pl.Series] = {}
    for key, dtype in _hp_dtypes(cvs, hp_keys).items():
        values = [v for cv in cvs for v in [cv.hparams.get(key)] * cv.n_runs]
        columns[key] = pl.Series(key, tables.hparam_values(values, dtype), dtype=dtype)
    runs = pl.concat([cv.table for cv in cvs], how="diagonal_relaxed")
    names = pl.Series("cv_name", [cv.cv_name for cv in cvs for _ in range(cv.n_runs)], dtype=pl.String)
    return runs.with_columns(names, *columns.values()).select(list(order))


def ranked(cvs: list[CvSummary], select: str = "score") -> list[CvSummary]:
    """Trials best first (cv_table.rank_key): stable before unstable, then by score, or by lcb with select="lcb"
    (NaN last, then by score); a pruned trial (scored on the folds, or at the rung, it reached) below every trial that
    ran them all, and so is a trial paused at a rung (an unfinished tune)."""
    return sorted(cvs, key=lambda c: rank_key(c, select))


def selected(collected: Collected, select: str | None = None) -> str:
    """The ranking a tune was planned with (`--select`), unless `select` overrides it; older trees rank by score."""
    return select or collected.plan.settings.select
