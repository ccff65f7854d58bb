"""Provenance end to end on the local launcher (issue 24): a cv from a dirty git work tree records its code,
environment and data; its workers (a pool prestarted while the CLI plans) import the task from the plan's snapshot;
`--resume` after the task module was edited to raise on import still succeeds and names the edited file; a dry run
names the code and writes nothing; a tree over the limit is refused with exit 2. Every call is a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nestling.core.provenance import environment
from nestling.testing.code_trees import DATA_DIGEST, PROBE_TASK, code_tree, git, probe_tree

pytestmark = pytest.mark.e2e

FAST = ["--hp", "sleep_s=0", "--n_folds", "2", "--n_seeds", "1", "--max_epochs", "1", "--accelerator", "cpu",
        "--quiet"]  # fmt: skip


def dirty_repo(root: Path) -> Path:
    """A git work tree with the task in src/labpkg, committed, then edited (uncommitted); data/ is ignored."""
    code_tree(root, {"src/labpkg/__init__.py": "", "src/labpkg/task.py": PROBE_TASK, "data/train.bin": b"\0" * 1000},
              gitignore="data/\n")  # fmt: skip
    (root / "src" / "labpkg" / "notes.py").write_text("# work in progress\n")  # untracked, not ignored: dirty
    return root


def nestling(*args: str, repo: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), *sys.path]), "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "nestling.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300, check=False)  # fmt: skip


def results(cv: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(cv.glob("*/run_result.json"))]


def test_a_cv_from_a_dirty_tree_records_its_code_and_a_resume_after_an_edit_uses_the_snapshot(tmp_path: Path) -> None:
    repo = dirty_repo(tmp_path / "repo")
    art = tmp_path / "art"
    done = nestling("cv", "--task", "labpkg.task:Probe", *FAST, "--artifact_dir", str(art), "--name", "prov",
                    repo=repo, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cv = art / "_cross_validations" / "prov"
    manifests = list((cv / "_code").glob("*.json"))
    assert len(manifests) == 1 and sorted(p.name for p in art.iterdir()) == ["_cross_validations"]
    manifest = json.loads(manifests[0].read_text())
    key = manifest["key"]
    assert sorted(manifest["files"]) == [".gitignore", "src/labpkg/__init__.py", "src/labpkg/notes.py",
                                         "src/labpkg/task.py"]  # fmt: skip
    runs = results(cv)
    head = git(repo, "rev-parse", "HEAD")
    assert [r["status"] for r in runs] == ["success", "success"]
    for r in runs:
        assert (r["code_commit"], r["code_dirty"], r["code_digest"]) == (head, True, key)
        assert r["env_digest"] == environment.current().digest and r["data_digest"] == DATA_DIGEST
        assert r["image_digest"] is None and re.fullmatch(r"[0-9a-f]{16}", r["code_digest"])
    snapshot = cv / "_code" / key / "src" / "labpkg" / "task.py"
    for run_dir in sorted(p.parent for p in cv.glob("*/run_result.json")):
        # the pool started while the CLI planned imported the snapshot as taken (a temporary copy, the same key)
        imported = (run_dir / "imported_from.txt").read_text()
        assert imported.endswith(f"/_code/{key}/src/labpkg/task.py") and not imported.startswith(str(repo))
    assert snapshot.read_text() == PROBE_TASK
    table = pl.read_parquet(cv / "run_infos.parquet")
    assert table.get_column("code_commit").to_list() == [head, head]
    assert table.get_column("code_digest").to_list() == [key, key]
    status = nestling("status", str(cv), repo=repo, cwd=tmp_path)
    assert f"code: commit {head[:12]} + uncommitted changes; snapshot _code/{key} (4 files)" in status.stdout
    assert f"commit {head[:12]} + uncommitted changes; snapshot _code/{key}" in (cv / "report.html").read_text()

    # the code changes under the finished cv: its module now raises on import; a run's result goes missing
    (repo / "src" / "labpkg" / "task.py").write_text('raise RuntimeError("edited after submit")\n')
    lost = sorted(cv.glob("*/run_result.json"))[0]
    lost.unlink()
    resumed = nestling("cv", "--resume", "prov", "--artifact_dir", str(art), "--quiet", repo=repo, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    drift = ("nestling: cv prov: code changed since the plan: src/labpkg/task.py; the resumed runs use the plan's "
             "snapshot (--force to take the current code)")  # fmt: skip
    assert drift in resumed.stderr.splitlines()
    again = json.loads(lost.read_text())
    assert (again["status"], again["attempt"], again["code_digest"]) == ("success", 2, key)
    assert Path((lost.parent / "imported_from.txt").read_text()) == snapshot
    launch = json.loads((cv / "launch.json").read_text())["launches"][-1]
    assert launch["drift"] == [drift.removeprefix("nestling: cv prov: ")]

    nothing_left = nestling("cv", "--resume", "prov", "--artifact_dir", str(art), "--quiet", repo=repo, cwd=tmp_path)
    assert nothing_left.returncode == 0 and drift in nothing_left.stderr.splitlines()
    assert "every run succeeded already" in nothing_left.stdout


def test_a_dry_run_names_the_code_and_limits_and_opting_out_are_kept(tmp_path: Path) -> None:
    repo = dirty_repo(tmp_path / "repo")
    art = tmp_path / "art"
    head = git(repo, "rev-parse", "HEAD")[:12]
    dry = nestling("cv", "--task", "labpkg.task:Probe", *FAST, "--artifact_dir", str(art), "--dry_run",
                   repo=repo, cwd=tmp_path)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"code: {repo} (commit {head} + uncommitted changes); a launch snapshots 4 files" in dry.stdout
    assert not art.exists()

    (repo / "src" / "labpkg" / "weights.bin").write_bytes(b"\0" * 1_500_000)
    big = nestling("cv", "--task", "labpkg.task:Probe", *FAST, "--artifact_dir", str(art), "--snapshot_max_mb",
                   "1", repo=repo, cwd=tmp_path)  # fmt: skip
    assert big.returncode == 2 and not art.exists()
    (line,) = big.stderr.strip().splitlines()
    assert "src/labpkg/weights.bin (1.5 MB)" in line and "--snapshot_code false" in line

    (repo / "src" / "labpkg" / "weights.bin").unlink()
    off = nestling("cv", "--task", "labpkg.task:Probe", *FAST, "--artifact_dir", str(art), "--name", "off",
                   "--snapshot_code", "false", repo=repo, cwd=tmp_path)  # fmt: skip
    assert off.returncode == 0, off.stdout + off.stderr
    cv = art / "_cross_validations" / "off"
    (manifest,) = [json.loads(p.read_text()) for p in (cv / "_code").glob("*.json")]
    assert (manifest["snapshot"], manifest["reason"], manifest["digest"]) == (False, "--snapshot_code false", None)
    assert [p.name for p in (cv / "_code").iterdir()] == [f"{manifest['key']}.json"]  # no files copied
    for run in results(cv):
        assert (run["code_commit"][:12], run["code_dirty"], run["code_digest"]) == (head, True, None)
    for imported in cv.glob("*/imported_from.txt"):  # without a snapshot the live tree is imported
        assert imported.read_text() == str(repo / "src" / "labpkg" / "task.py")


def test_a_retrain_trains_the_tunes_snapshot_and_says_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tune (planned as `nestling tune` plans it, its results written by hand) whose module is then edited to
    raise on import: `nestling retrain` names the edited and the new file, trains the tune's snapshot (linked into
    its own _code, not copied) and records it."""
    import dataclasses

    from nestling.commands.code_capture import release_code, take_code
    from nestling.core.options.config import parse_config
    from nestling.core.provenance.capture import plan_provenance
    from nestling.core.tree.atomic import write_json
    from nestling.core.tree.naming import RunPaths
    from nestling.plan.preflight import prepare
    from nestling.plan.store import write_plan

    repo = probe_tree(tmp_path / "repo", "labretrain")
    monkeypatch.syspath_prepend(str(repo / "src"))
    hp = tmp_path / "hp.toml"
    hp.write_text("[hyperparameters]\nvalue = [0.25, 0.75]\n")
    config = parse_config(["--task", "labretrain.task:Probe", "--hpconfig", str(hp), "--sampler", "grid",
                           "--n_trials", "2", "--n_folds", "2", "--n_seeds", "1", "--test_split", "random",
                           "--accelerator", "cpu", "--hp", "sleep_s=0", "--artifact_dir", str(tmp_path / "art"),
                           "--name", "t"])  # fmt: skip
    code = take_code(config)
    try:
        prepared = prepare(config, "tune")
        plan = dataclasses.replace(prepared.plan, provenance=plan_provenance(code, prepared.task, config.data.task))
        write_plan(plan, prepared.splits, code)
    finally:
        release_code(code)
    assert code is not None
    for cv in plan.cvs:
        for run in cv.runs:
            value = cv.hparams["value"]
            RunPaths(run.dir).dir.mkdir(parents=True)
            write_json(RunPaths(run.dir).result, {"status": "success", "metrics": {"val/JaccardIndex": value,
                                                                                    "val/Recall": value}})
    (repo / "src" / "labretrain" / "task.py").write_text('raise RuntimeError("edited after the tune")\n')
    (repo / "src" / "labretrain" / "new.py").write_text("# added after the tune\n")

    done = nestling("retrain", str(plan.root), "--retrain_epochs", "1", "--quiet", repo=repo, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("nestling: retrain t-final: code changed since the plan: src/labretrain/new.py, src/labretrain/task.py; "
            "the retrain's runs use the plan's snapshot (--force to take the current code)") in done.stderr.splitlines()
    final = plan.root / "t-final"
    key = code.manifest.key
    mine = final / "_code" / key / "src" / "labretrain" / "task.py"
    tuned = plan.root / "_code" / key / "src" / "labretrain" / "task.py"
    assert mine.read_text() == PROBE_TASK and mine.stat().st_ino == tuned.stat().st_ino  # linked, not copied
    (result,) = results(final)
    assert (result["status"], result["code_digest"], result["code_dirty"]) == ("success", key, False)
    assert (result["data_digest"], result["hparams"]["value"]) == (DATA_DIGEST, 0.75)
    assert Path(next(final.glob("*/imported_from.txt")).read_text()) == mine
