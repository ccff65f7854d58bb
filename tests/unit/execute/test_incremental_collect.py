"""Issue 15 #5: a collect rewrites only the cv tables whose inputs changed, and its tables equal a from-scratch
collect's; a worker that finishes a cv's last run writes that cv's table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
from support import bench_tune

from nestling.core.tree import naming
from nestling.execute.cv_table import collect_finished_cv
from nestling.read.collect import collect


def _tables(root: Path) -> dict[str, pl.DataFrame]:
    return {str(p.relative_to(root)): pl.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/" + naming.RUN_INFOS)}


def _from_scratch(tune: Path, dest: Path) -> dict[str, pl.DataFrame]:
    copy = dest / tune.name
    shutil.copytree(tune, copy)
    for p in [*copy.rglob("*.parquet"), *copy.rglob(naming.RUN_INFOS_STAMP)]:
        p.unlink()
    collect(copy)
    return _tables(copy)


def _same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].equals(b[key]), key


def test_a_second_collect_writes_no_cv_table_and_a_changed_result_rewrites_only_its_cv(tmp_path: Path) -> None:
    tune = bench_tune(tmp_path / "t", 100)  # 10 cvs of 10 runs
    collect(tune)
    first = _mtimes(tune)
    assert len(first) == 10
    collect(tune)
    assert _mtimes(tune) == first  # nothing changed: no cv table rewritten (idempotent)
    result = next((tune / "bench-cv3").glob("*/run_result.json"))
    data = json.loads(result.read_text())
    data["metrics"] = {**data["metrics"], "val/JaccardIndex": 0.123456}
    data["status"] = "success"
    result.write_text(json.dumps(data))
    (tune / "bench-cv5" / naming.RUN_INFOS).unlink()  # a deleted table comes back
    collect(tune)
    now = _mtimes(tune)
    changed = sorted(k for k in now if now[k] != first.get(k))
    assert changed == ["bench-cv3/run_infos.parquet", "bench-cv5/run_infos.parquet"]
    assert 0.123456 in pl.read_parquet(tune / "bench-cv3" / naming.RUN_INFOS)["val/JaccardIndex"].to_list()
    _same(_tables(tune), _from_scratch(tune, tmp_path / "scratch"))


def test_the_worker_that_ends_a_cv_writes_its_table_and_the_final_collect_keeps_it(tmp_path: Path) -> None:
    tune = bench_tune(tmp_path / "t", 30)  # 3 cvs
    runs = sorted((tune / "bench-cv1").glob("*/run_result.json"))
    held = runs[0].read_bytes()
    runs[0].unlink()  # one run of cv1 has not ended yet
    assert not collect_finished_cv(tune, runs[1].parent)
    assert not (tune / "bench-cv1" / naming.RUN_INFOS).exists()
    runs[0].write_bytes(held)  # ... now it has: the worker that ended it writes cv1's table
    assert collect_finished_cv(tune, runs[0].parent)
    written = (tune / "bench-cv1" / naming.RUN_INFOS).stat().st_mtime_ns
    assert not collect_finished_cv(tune, tmp_path / "not-a-run-of-the-plan")
    collect(tune)
    assert (tune / "bench-cv1" / naming.RUN_INFOS).stat().st_mtime_ns == written  # fresh: not rewritten
    _same(_tables(tune), _from_scratch(tune, tmp_path / "scratch"))


def test_a_rewrite_with_the_same_size_and_mtime_is_still_seen(tmp_path: Path) -> None:
    import os

    from nestling.core.tree.atomic import write_atomic

    tune = bench_tune(tmp_path / "t", 20)
    collect(tune)
    before = _mtimes(tune)
    result = next((tune / "bench-cv0").glob("*/run_result.json"))
    st = result.stat()
    data = json.loads(result.read_text())
    data["host"] = "node2"  # same length as node1
    text = json.dumps(data, indent=1)
    assert len(text) == st.st_size
    write_atomic(result, text)  # atomic: a new file (inode) renamed into place
    os.utime(result, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (result.stat().st_size, result.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    collect(tune)
    after = _mtimes(tune)
    assert after["bench-cv0/run_infos.parquet"] != before["bench-cv0/run_infos.parquet"]
    assert after["bench-cv1/run_infos.parquet"] == before["bench-cv1/run_infos.parquet"]
