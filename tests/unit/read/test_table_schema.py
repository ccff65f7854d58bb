"""Every column of every table has its declared dtype whatever the data (issue 21 #9), and the tables count and rank
pruned trials (#5, #6). Tunes of the bowl task run through the real study (draws, pruning) with simulated workers
(testing/bowl_workers), so each tree takes a fraction of a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from bowl_trees import bowl_tune, fail

from nestling.core.tree import naming, tables
from nestling.execute.search import study
from nestling.plan.store import load_plan
from nestling.read import collect as C


def check(frame: pl.DataFrame, declared: dict[str, Any], hparams: dict[str, Any]) -> None:
    """Each column is declared (its dtype), a hyperparameter (hparam_dtype of its values) or a metric (Float64)."""
    assert set(declared) <= set(frame.columns), set(declared) - set(frame.columns)
    for column, dtype in frame.schema.items():
        if column in declared:
            assert dtype == declared[column], (column, dtype)
        elif column in hparams:
            assert dtype == hparams[column] and dtype != pl.Null, (column, dtype)
        else:
            assert "/" in column and dtype == tables.METRIC, (column, dtype)


def check_tune(root: Path) -> dict[str, pl.DataFrame]:
    collected = C.collect(root)
    keys = C._hp_columns(collected.cvs)
    hparams = {k: tables.hparam_dtype([cv.hparams.get(k) for cv in collected.cvs]) for k in keys}
    out = {"tune_infos": pl.read_parquet(root / naming.TUNE_INFOS), "run_infos": pl.read_parquet(root / naming.RUN_INFOS)}
    check(out["tune_infos"], tables.TUNE_INFOS_COLUMNS, hparams)
    check(out["run_infos"], tables.TUNE_RUN_INFOS_COLUMNS, hparams)
    for planned in collected.plan.cvs:
        if (planned.dir / naming.RUN_INFOS).exists():
            check(pl.read_parquet(planned.dir / naming.RUN_INFOS), tables.RUN_INFOS_COLUMNS, {})
    return out


def scenario(tmp_path: Path, which: str) -> Path:
    if which == "complete":
        return bowl_tune(tmp_path, which)
    if which == "pruned":
        return bowl_tune(tmp_path, which, "--sampler", "tpe", "--pruner", "successive-halving", n_trials=8)
    if which == "nothing run":
        return bowl_tune(tmp_path, "unrun", run=False)
    root = bowl_tune(tmp_path, which.replace(" ", "-"))
    plan = load_plan(root)
    runs = [plan.cvs[0].runs[1]] if which == "one failed" else plan.runs
    for run in runs:
        fail(run.dir)
    return root


@pytest.mark.parametrize("which", ["complete", "pruned", "nothing run", "one failed", "all failed"])
def test_every_column_has_its_declared_dtype(tmp_path: Path, which: str) -> None:
    check_tune(scenario(tmp_path, which))


def test_tunes_with_and_without_an_unstable_trial_concatenate(tmp_path: Path) -> None:
    """The issue's case: unstable_reason was Null without an unstable trial, String with one."""
    stable = check_tune(scenario(tmp_path / "a", "complete"))
    unstable = check_tune(scenario(tmp_path / "b", "one failed"))
    both = pl.concat([stable["tune_infos"], unstable["tune_infos"]], how="vertical")
    assert both.schema["unstable_reason"] == pl.String
    assert both["unstable_reason"].null_count() == 2 * 6 - 1
    runs = pl.concat([stable["run_infos"], unstable["run_infos"]], how="vertical")
    assert runs.height == 2 * 6 * 3


def test_a_hyperparameter_that_is_none_everywhere_is_a_string_column() -> None:
    assert tables.hparam_dtype([None, None]) == pl.String
    assert tables.hparam_dtype([1, None]) == pl.Int64
    assert tables.hparam_dtype([1, 0.5]) == pl.Float64
    assert tables.hparam_dtype([True, False]) == pl.Boolean
    assert tables.hparam_dtype(["a", 1]) == pl.String
    assert tables.hparam_values(["a", 1, None], pl.String) == ["a", "1", None]


def test_final_infos_columns(tmp_path: Path) -> None:
    collected = C.collect(scenario(tmp_path, "one failed"), write=False)
    for cv in collected.cvs[:2]:  # with and without a failed run
        table = cv.table.with_columns(pl.col("val/score").alias("test/score")) if "val/score" in cv.table.columns \
            else cv.table  # fmt: skip
        final = C.final_table(type(cv)(**{**cv.__dict__, "table": table}))
        check(final, tables.FINAL_INFOS_COLUMNS, {})


def test_pruned_runs_are_counted_and_pruned_trials_rank_after_complete_ones(tmp_path: Path) -> None:
    root = scenario(tmp_path, "pruned")
    collected = C.collect(root)
    plan = collected.plan
    pruned = study.pruned_trials(root)
    assert pruned
    counts = collected.counts
    assert sum(counts.values()) == len(plan.runs)  # every planned run is counted, the pruned ones too
    never_ran = sum(len(cv.runs) for i, cv in enumerate(plan.cvs) if i in pruned) - sum(
        c.n_runs for c in collected.cvs if c.hp_index in pruned
    )
    assert counts["pruned"] == never_ran > 0 and collected.n_pruned_trials == len(pruned)
    infos = pl.read_parquet(root / naming.TUNE_INFOS)
    assert infos["n_pruned"].sum() == never_ran
    ranked = infos.sort("rank")
    assert sorted(infos["rank"].to_list()) == list(range(1, 9))
    states = ranked["state"].to_list()
    assert states == sorted(states, key=lambda s: s == "pruned")  # complete trials first, whatever their score
    assert ranked["cv_name"].to_list() == [cv.cv_name for cv in C.ranked(collected.cvs)]
    best_pruned = max(s for s, st in zip(infos["score"], infos["state"], strict=True) if st == "pruned")
    worst_complete = min(s for s, st in zip(infos["score"], infos["state"], strict=True) if st == "complete")
    if best_pruned > worst_complete:  # the case: sorting by score alone would put the pruned one first
        assert ranked["state"][0] == "complete"
