"""What the readers show of provenance, on a planned tune whose results are written by hand: run_infos and
tune_infos columns, the summary's line when runs differ, `nestling status` and the report's header."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from nestling.core.options.config import parse_config
from nestling.core.provenance.capture import capture_code, plan_provenance
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_json
from nestling.plan.preflight import prepare
from nestling.plan.store import load_plan, write_plan
from nestling.read.collect import collect
from nestling.read.provenance_lines import differing_line
from nestling.read.report.compose import write_report
from nestling.read.summary import print_summary
from nestling.testing.code_trees import code_tree, commit_all, git

TASK = "from nestling.tasks.sleep import SleepTask\n\n\nclass Probe(SleepTask):\n    pass\n"


@pytest.fixture(autouse=True)
def _forget_labpkg() -> Iterator[None]:
    """Planning imports the task in this process: drop its package afterwards, or a later test of another module
    that makes its own `labpkg` would find this one in sys.modules (the tests of a worker run in any order)."""
    yield
    for name in [n for n in sys.modules if n == "labpkg" or n.startswith("labpkg.")]:
        del sys.modules[name]


@pytest.fixture
def tune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tune of 2 trials x 2 folds of a task in a dirty git tree, its code taken as a launch takes it; trial 1's
    second run has another commit, environment and image (a forced resume, another node, an image)."""
    repo = code_tree(tmp_path / "repo", {})
    (repo / "labpkg").mkdir()
    (repo / "labpkg" / "__init__.py").write_text("")
    (repo / "labpkg" / "task.py").write_text(TASK)
    commit_all(repo, "task")
    (repo / "labpkg" / "task.py").write_text(TASK + "# edited\n")
    monkeypatch.syspath_prepend(str(repo))
    hp = tmp_path / "hp.toml"
    hp.write_text("[hyperparameters]\nvalue = [0.25, 0.75]\n")
    config = parse_config([
        "--task", "labpkg.task:Probe", "--hpconfig", str(hp), "--sampler", "grid", "--n_trials", "2", "--n_folds",
        "2", "--n_seeds", "1", "--artifact_dir", str(tmp_path / "art"), "--name", "t", "--scoring_metric", "val/s",
    ])  # fmt: skip
    code = capture_code(config.data.task, tmp_path / "taken", enabled=True, max_mb=50)
    prepared = prepare(config, "tune")
    plan = dataclasses.replace(prepared.plan, provenance=plan_provenance(code, prepared.task, config.data.task))
    write_plan(plan, prepared.splits, code)
    assert code is not None
    head, older = git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "HEAD~1")
    for cv in plan.cvs:
        for k, run in enumerate(cv.runs):
            odd = cv.hp_index == 1 and k == 1
            run.dir.mkdir(parents=True)
            write_json(naming.RunPaths(run.dir).result, {
                "status": "success", "metrics": {"val/s": 0.5}, "code_commit": older if odd else head,
                "code_dirty": not odd, "code_digest": code.manifest.digest, "env_digest": "e2" if odd else "e1",
                "data_digest": None, "image_digest": "sha256:b" if odd else "sha256:a",
            })  # fmt: skip
    return plan.root


def test_run_infos_and_tune_infos_carry_the_code_and_digests(tune: Path) -> None:
    collected = collect(tune)
    runs = pl.read_parquet(tune / naming.RUN_INFOS)
    assert runs.schema["code_dirty"] == pl.Boolean and runs.schema["code_commit"] == pl.Utf8
    assert runs.get_column("env_digest").to_list() == ["e1", "e1", "e1", "e2"]
    assert runs.get_column("data_digest").to_list() == [None] * 4
    trials = pl.read_parquet(tune / naming.TUNE_INFOS).sort("hp_index")
    head = load_plan(tune).provenance.manifest(tune).commit  # type: ignore[union-attr]
    commits = trials.get_column("code_commit").to_list()
    assert commits[0] == head and set(commits[1].split(", ")) == {head, runs.get_column("code_commit")[3]}
    assert trials.get_column("code_dirty").to_list() == [True, True]
    assert differing_line(collected) == (
        "provenance: the runs differ in code_commit (2 values), env_digest (2 values), image_digest (2 values); "
        "compare them in run_infos.parquet"
    )


def test_the_summary_status_and_report_name_the_code(tune: Path, capsys: pytest.CaptureFixture[str]) -> None:
    collected = collect(tune)
    print_summary(collected)
    out = capsys.readouterr().out
    assert "provenance: the runs differ in code_commit (2 values), env_digest (2 values)" in " ".join(out.split())
    manifest = load_plan(tune).provenance.manifest(tune)  # type: ignore[union-attr]
    assert manifest is not None
    line = f"code: commit {manifest.commit[:12]} + uncommitted changes; snapshot _code/{manifest.key} (2 files)"  # type: ignore[index]
    done = subprocess.run([sys.executable, "-m", "nestling.cli", "status", str(tune)], capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert line in done.stdout
    as_json = subprocess.run([sys.executable, "-m", "nestling.cli", "status", str(tune), "--json"],
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    assert json.loads(as_json.stdout)["code"] == {"commit": manifest.commit, "dirty": True,
                                                  "digest": manifest.digest, "snapshot": f"_code/{manifest.key}"}
    page = write_report(tune, collected, png=False).read_text()
    assert f'<p class="sub" id="provenance">C{line[1:]}. Provenance: the runs differ in code_commit' in page
