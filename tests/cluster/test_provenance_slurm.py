"""Queued jobs run the code that was submitted (issue 24), on the real local SLURM cluster.

A cv from a dirty git work tree is submitted with its array held back by a dependency on a held job; meanwhile the
task module is edited to raise on import. Released, the array tasks still succeed: they import the task from the
plan's code snapshot, and record the submitted commit, the uncommitted changes and the digests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import poll

from nestling.core.provenance import environment
from nestling.core.tree.clock import utc_now
from nestling.testing.code_trees import DATA_DIGEST, PROBE_TASK, git, probe_tree

pytestmark = pytest.mark.cluster

def test_a_delayed_array_runs_the_submitted_code_after_the_module_was_edited_to_raise(
    slurm_cluster: str, tmp_path: Path
) -> None:
    repo = probe_tree(tmp_path / "repo", "labpkg")
    (repo / "src" / "labpkg" / "task.py").write_text(PROBE_TASK + "# tuned after the commit\n")  # submitted dirty
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), *sys.path]), "WANDB_MODE": "offline"}
    hold = ["sbatch", "--parsable", "--hold", "--job-name", "hold-prov", "--output", str(tmp_path / "hold.out"),
            "--wrap", "true"]  # fmt: skip
    blocker = subprocess.run(hold, capture_output=True, text=True, env=env, timeout=30, check=True).stdout.strip()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nestling.cli", "cv", "--task", "labpkg.task:Probe", "--hp", "sleep_s=0",
             "--n_folds", "2", "--n_seeds", "1", "--max_epochs", "1", "--accelerator", "cpu", "--launcher", "slurm",
             "--cpus_per_task", "1", "--mem_gb", "1", "--slurm_extra", f"dependency=afterany:{blocker}",
             "--artifact_dir", str(tmp_path / "art"), "--name", "late", "--quiet"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        cv = tmp_path / "art" / "_cross_validations" / "late"
        assert not list(cv.glob("*/run_result.json"))  # still held back
        (repo / "src" / "labpkg" / "task.py").write_text('raise RuntimeError("edited while the jobs were queued")\n')
        edited_at = utc_now()
        time.sleep(0.01)
    finally:
        subprocess.run(["scontrol", "release", blocker], env=env, timeout=30, check=False)
    results = poll(lambda: _finished(cv), 600, "the released array's two results")
    (manifest,) = [json.loads(p.read_text()) for p in (cv / "_code").glob("*.json")]
    head = git(repo, "rev-parse", "HEAD")
    for result in results:
        assert result["status"] == "success", result["error"]
        assert result["started_at"] >= edited_at and result["slurm_job_id"]
        assert (result["code_commit"], result["code_dirty"], result["code_digest"]) == (head, True, manifest["key"])
        assert result["env_digest"] == environment.current().digest and result["data_digest"] == DATA_DIGEST
        assert result["image_digest"] is None
    snapshot = cv / "_code" / manifest["key"] / "src" / "labpkg" / "task.py"
    for imported in cv.glob("*/imported_from.txt"):
        assert imported.read_text() == str(snapshot)
    assert snapshot.read_text().endswith("# tuned after the commit\n")


def _finished(cv: Path) -> list[dict[str, object]] | None:
    found = [json.loads(p.read_text()) for p in sorted(cv.glob("*/run_result.json"))]
    return found if len(found) == 2 else None
