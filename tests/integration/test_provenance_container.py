"""Provenance in an image (issue 24), with real podman: a cv from a dirty git work tree whose task directory is
neither bound into the image nor on its PYTHONPATH still runs, because its workers import the task from the plan's
code snapshot (inside the artifact dir, which is bound); each run records the commit, the uncommitted changes, the
digests and the image's ID."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from nestling.core.containers.binds import host_python_binds
from nestling.testing.code_trees import DATA_DIGEST, git, probe_tree

IMAGE = "localhost/nestling-test:latest"
def test_a_cv_in_podman_imports_the_snapshot_and_records_code_and_image(
    podman_env: dict[str, str], tmp_path: Path
) -> None:
    repo = probe_tree(tmp_path / "repo", "labpkg")
    (repo / "src" / "labpkg" / "extra.py").write_text("# untracked\n")
    art = tmp_path / "art"
    argv = [
        sys.executable, "-m", "nestling.cli", "cv", "--task", "labpkg.task:Probe", "--hp", "sleep_s=0",
        "--n_folds", "2", "--n_seeds", "1", "--max_epochs", "1", "--accelerator", "cpu", "--launcher", "local",
        "--artifact_dir", str(art), "--name", "boxed", "--quiet", "--container_image", IMAGE,
        "--container_runtime", "podman", "--container_bind", *host_python_binds(),
    ]  # fmt: skip
    env = {**podman_env, "PYTHONPATH": str(repo / "src"), "WANDB_MODE": "offline"}  # the CLI's, not the image's
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    cv = art / "_cross_validations" / "boxed"
    (manifest,) = [json.loads(p.read_text()) for p in (cv / "_code").glob("*.json")]
    image_id = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE], env=podman_env,
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    results = [json.loads(p.read_text()) for p in sorted(cv.glob("*/run_result.json"))]
    assert len(results) == 2
    for result in results:
        assert result["status"] == "success" and result["in_container"] is True
        assert (result["code_commit"], result["code_dirty"]) == (git(repo, "rev-parse", "HEAD"), True)
        assert result["code_digest"] == manifest["key"] and result["data_digest"] == DATA_DIGEST
        assert re.fullmatch(r"[0-9a-f]{16}", result["env_digest"])
        assert result["image_digest"] == (image_id if image_id.startswith("sha256:") else f"sha256:{image_id}")
    imported = sorted(p.read_text() for p in cv.glob("*/imported_from.txt"))
    assert imported == [str(cv / "_code" / manifest["key"] / "src" / "labpkg" / "task.py")] * 2
