"""The columns of the parquet tables, each with the one dtype it has whatever the data (issue 21 #9).

A column whose values happen to be all null (no unstable trial, nothing drawn yet) keeps its declared dtype, so the
tables of two tunes concatenate and a reader's schema never depends on the run. Besides the declared columns a table
holds metric columns (every logged metric: Float64) and, in a tune's tables, one column per hyperparameter, whose
dtype follows the hyperparameter's values by one rule (`hparam_dtype`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl

# run_infos.parquet of a cv (and of a retrain): one row per run; `score` and `score_is_unstable` are the cv's
RUN_INFOS_COLUMNS: dict[str, Any] = {
    "run_name": pl.String, "run_id": pl.String, "fold": pl.Int64, "seed": pl.Int64, "status": pl.String,
    "error": pl.String, "duration": pl.Float64, "checkpoint": pl.String, "is_unstable": pl.Boolean,
    "unstable_reason": pl.String, "run_score": pl.Float64, "score": pl.Float64, "score_is_unstable": pl.Boolean,
    "attempt": pl.Int64, "worker_startup_s": pl.Float64, "accelerator": pl.String,
    "device_names": pl.List(pl.String), "peak_memory_bytes": pl.Int64, "cuda_visible_devices": pl.String,
    "failure_class": pl.String, "stage_s": pl.Float64,
    # what produced the run (core/provenance/record.RUN_FIELDS, in that order)
    "code_commit": pl.String, "code_dirty": pl.Boolean, "code_digest": pl.String, "env_digest": pl.String,
    "data_digest": pl.String, "image_digest": pl.String, "epochs_trained": pl.Int64, "stop_reason": pl.String,
}  # fmt: skip
# a tune's run_infos.parquet: every cv's rows, with these and the hyperparameter columns added
TUNE_RUN_INFOS_COLUMNS: dict[str, Any] = {**RUN_INFOS_COLUMNS, "cv_name": pl.String}
# tune_infos.parquet: one row per trial, in trial order; `rank` is the order the CLI and the report show
TUNE_INFOS_COLUMNS: dict[str, Any] = {
    "cv_name": pl.String, "hp_index": pl.Int64, "rank": pl.Int64, "state": pl.String, "score": pl.Float64,
    "score_is_unstable": pl.Boolean, "unstable_reason": pl.String, "run_score_mean": pl.Float64,
    "run_score_std": pl.Float64, "run_score_sem": pl.Float64, "run_score_sem_corrected": pl.Float64,
    "lcb": pl.Float64, "p_best": pl.Float64, "n_runs": pl.Int64,
    "n_failed": pl.Int64, "n_pruned": pl.Int64, "n_folds_done": pl.Int64, "n_epochs_done": pl.Int64,
    "rung": pl.Int64, "bracket": pl.Int64, "drawn_at": pl.Int64, "code_commit": pl.String, "code_dirty": pl.Boolean,
}  # fmt: skip
# final_infos.parquet of a retrain: a row per seed, then the rows mean, std, sem (their seed/run_name/status null)
FINAL_INFOS_COLUMNS: dict[str, Any] = {
    "row": pl.String, "seed": pl.Int64, "run_name": pl.String, "status": pl.String, "run_score": pl.Float64,
}
METRIC = pl.Float64  # every logged metric's column


def hparam_dtype(values: Iterable[Any]) -> Any:
    """A hyperparameter column's dtype from its values (nulls aside): Boolean, Int64, Float64 (ints and floats
    mixed) or String (strings, mixed kinds, or no value at all: a column is never of polars' Null type); a list
    value gives polars' own list type. The values of a String column that are not strings are written with str()."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pl.String
    if kinds == {bool}:
        return pl.Boolean
    if kinds == {int} and all(-(2**63) <= v < 2**63 for v in values if v is not None):
        return pl.Int64
    if kinds <= {int, float} and bool not in kinds:
        return pl.Float64
    if kinds == {list}:
        return pl.Series([v for v in values if v is not None]).dtype
    return pl.String


def hparam_values(values: list[Any], dtype: Any) -> list[Any]:
    """The values as a column of `dtype` holds them (str() for a String column's numbers, as polars casts)."""
    if dtype == pl.String:
        return [v if v is None or isinstance(v, str) else str(v) for v in values]
    return values


def conform(frame: pl.DataFrame, declared: dict[str, Any]) -> pl.DataFrame:
    """`frame` with each declared column it holds cast to its declared dtype (an all-null column included)."""
    casts = [pl.col(name).cast(dtype) for name, dtype in declared.items() if name in frame.columns
             and frame.schema[name] != dtype]  # fmt: skip
    return frame.with_columns(casts) if casts else frame
