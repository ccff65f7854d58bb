"""The fast paths added for the benchmarks (bench/) give exactly what the plain code gave: same tables, same
spec files. No timing here: bench/ measures, tests only check results."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nestling.core.options.config import parse_config
from nestling.core.tree import naming
from nestling.plan.preflight import prepare
from nestling.plan.specs import run_specs
from nestling.plan.store import _rel, load_spec, write_plan
from nestling.read import collect as C

REPO = Path(__file__).resolve().parents[3]


def _fake_tune(tmp_path: Path, n: int) -> Path:
    sys.path.insert(0, str(REPO))
    try:
        from bench.collector import make_tree
    finally:
        sys.path.remove(str(REPO))
    return make_tree(tmp_path, n)


@pytest.mark.parametrize(
    "change",
    [
        lambda i, h: h,
        lambda i, h: {**h, "value": i if i % 2 else float(i)},  # int and float -> Float64
        lambda i, h: {
            **h,
            "value": None if i % 3 else 1.5,
            "extra": "a" if i % 2 else None,
        },  # nulls, late key
        lambda i, h: {**h, "n": i % 5},  # Int64, as in tune_infos.parquet
        lambda i, h: {**h, "flag": bool(i % 2), "big": 2**40},  # falls back
        lambda i, h: {**h, "value": "x" if i % 2 else 1.0},  # falls back
        lambda i, h: {**h, "value": [1, 2]},  # falls back
    ],
)
def test_tune_runs_table_matches_the_per_cv_path(tmp_path: Path, change: Any) -> None:
    collected = C.collect(_fake_tune(tmp_path, 200), write=False)
    cvs = [dataclasses.replace(cv, hparams=change(i, cv.hparams)) for i, cv in enumerate(collected.cvs)]
    cvs[0] = dataclasses.replace(cvs[0], table=cvs[0].table.select(C.BASE_COLUMNS))  # a cv without metrics
    fast, slow = C.tune_runs_table(cvs), C._tune_runs_per_cv(cvs, C._hp_columns(cvs))
    assert fast.columns == slow.columns
    assert fast.schema == slow.schema
    assert fast.equals(slow)


@pytest.mark.parametrize("fallback", [False, True])
def test_a_hyperparameter_has_one_dtype_in_every_table(tmp_path: Path, fallback: bool) -> None:
    """Integer hyperparameters are Int64 in the tune's run_infos.parquet as in tune_infos.parquet (both paths)."""
    collected = C.collect(_fake_tune(tmp_path, 50), write=False)
    extra = {"tags": ["a"]} if fallback else {}  # a list: not a plain scalar, the per-cv path
    cvs = [dataclasses.replace(cv, hparams={**cv.hparams, "n": i, "depth": 2, "rate": 0.5 if i else 1, **extra})
           for i, cv in enumerate(collected.cvs)]  # fmt: skip
    runs, trials = C.tune_runs_table(cvs), C.tune_table(cvs)
    assert (C._tune_runs_fast(cvs, C._hp_columns(cvs)) is None) == fallback
    for key, dtype in {"n": pl.Int64, "depth": pl.Int64, "rate": pl.Float64}.items():
        assert (runs.schema[key], trials.schema[key]) == (dtype, dtype), key


def test_worker_startup_is_a_run_infos_column(tmp_path: Path) -> None:
    tune = _fake_tune(tmp_path, 20)
    plan = json.loads((tune / "plan.json").read_text())
    path = tune / plan["cvs"][0]["runs"][1]["dir"] / naming.RUN_RESULT
    path.write_text(json.dumps({**json.loads(path.read_text()), "worker_startup_s": 2.5}))
    C.collect(tune)
    table = pl.read_parquet(tune / plan["cvs"][0]["dir"] / naming.RUN_INFOS)
    assert table.schema["worker_startup_s"] == pl.Float64
    assert table["worker_startup_s"].to_list()[:3] == [None, 2.5, None]  # older results have none


def test_cv_tables_are_per_cv_and_scores_are_per_cv(tmp_path: Path) -> None:
    tune = _fake_tune(tmp_path, 100)
    collected = C.collect(tune)
    assert len(collected.cvs) == 10
    for cv, planned in zip(collected.cvs, collected.plan.cvs, strict=True):
        table = pl.read_parquet(planned.dir / naming.RUN_INFOS)
        assert table.equals(cv.table)
        assert table["run_name"].to_list() == [r.run_name for r in planned.runs]
        ok = table.filter((pl.col("status") == "success") & ~pl.col("is_unstable"))["run_score"].to_list()
        expected = sum(ok) / len(ok) if ok else math.nan
        assert table["score"].unique().to_list() == [pytest.approx(expected)]
    assert pl.read_parquet(tune / naming.RUN_INFOS).height == 100


def test_missing_results_are_rows_with_status_missing(tmp_path: Path) -> None:
    tune = _fake_tune(tmp_path, 20)
    plan = json.loads((tune / "plan.json").read_text())
    gone = tune / plan["cvs"][1]["runs"][3]["dir"] / naming.RUN_RESULT
    gone.unlink()
    collected = C.collect(tune)
    table = collected.cvs[1].table
    assert table["status"][3] == "missing" and table["duration"][3] is None
    assert collected.counts["missing"] == 1


def test_write_plan_specs_are_the_spec_dicts(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = { low = 0.0, high = 1.0 }\n")
    config = parse_config(["--task", "sleep", "--n_trials", "3", "--n_folds", "2", "--n_seeds", "2", "--hpconfig",
                           str(space), "--artifact_dir", str(tmp_path / "art"), "--name", "t"])  # fmt: skip
    prepared = prepare(config, "tune")
    write_plan(prepared.plan, prepared.splits)
    specs = run_specs(prepared.plan)
    root = prepared.plan.root
    stored = [{**run.to_dict(), "run_dir": Path(run.run_dir).relative_to(root).as_posix(),
               "splits_file": "splits.json"} for run in specs]  # fmt: skip
    lines = (root / naming.RUN_SPECS).read_text().splitlines()
    assert lines == [json.dumps(data) for data in stored]  # paths relative to the plan root: a tree can move
    assert not any(Path(run.run_dir).exists() for run in specs)  # made when a run starts
    for run, data in list(zip(specs, stored, strict=True))[::-1]:
        assert load_spec(Path(run.run_dir)) == run  # from the plan's lines, then written into the new run dir
        assert (Path(run.run_dir) / naming.RUN_SPEC).read_text() == json.dumps(data)
        assert load_spec(Path(run.run_dir)) == run  # from its own run_spec.json
    record = json.loads((prepared.plan.root / naming.PLAN).read_text())
    assert [r["dir"] for cv in record["cvs"] for r in cv["runs"]] == [
        r.dir.relative_to(prepared.plan.root).as_posix() for r in prepared.plan.runs
    ]


@pytest.mark.parametrize("kind", ["cv", "tune", "run"])
def test_load_plan_gives_back_the_plan_write_plan_wrote(tmp_path: Path, kind: str) -> None:
    from nestling.plan.store import load_plan

    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = { low = 0.0, high = 1.0 }\n")
    config = parse_config(["--task", "sleep", "--n_trials", "2", "--n_folds", "2", "--hpconfig", str(space),
                           "--artifact_dir", str(tmp_path / "art"), "--name", "p"])  # fmt: skip
    prepared = prepare(config, kind)
    write_plan(prepared.plan, prepared.splits)
    assert load_plan(prepared.plan.root) == prepared.plan


@pytest.mark.parametrize(
    ("path", "root"),
    [("/a/b/c", "/a/b"), ("/a/b", "/a/b"), ("a/b/c", "a/b"), ("/a/b/c/d", "/a"), ("/a/b/../b/c", "/a/b")],
)
def test_rel_matches_pathlib(path: str, root: str) -> None:
    assert _rel(path, Path(root)) == (Path(path).relative_to(root).as_posix() or ".")


def test_rel_outside_root_raises() -> None:
    with pytest.raises(ValueError):
        _rel("/a/bc/d", Path("/a/b"))
