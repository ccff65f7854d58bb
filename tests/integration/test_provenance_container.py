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

IMAGE = "localhost/nestling-test:latest"
TASK = '''
import os

from nestling.tasks.sleep import SleepTask


class Probe(SleepTask):
    def data_digest(self):
        return "data-v3"

    def build_model(self, hparams):
        model = super().build_model(hparams)
        fit = model.on_fit_start

        def on_fit_start():
            with open(os.path.join(model.trainer.default_root_dir, "imported_from.txt"), "w") as f:
                f.write(__file__)
            fit()

        model.on_fit_start = on_fit_start
        return model
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_a_cv_in_podman_imports_the_snapshot_and_records_code_and_image(
    podman_env: dict[str, str], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "labpkg").mkdir(parents=True)
    (repo / "labpkg" / "__init__.py").write_text("")
    (repo / "labpkg" / "task.py").write_text(TASK)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "task")
    (repo / "labpkg" / "extra.py").write_text("# untracked\n")
    art = tmp_path / "art"
    argv = [
        sys.executable, "-m", "nestling.cli", "cv", "--task", "labpkg.task:Probe", "--hp", "sleep_s=0",
        "--n_folds", "2", "--n_seeds", "1", "--max_epochs", "1", "--accelerator", "cpu", "--launcher", "local",
        "--artifact_dir", str(art), "--name", "boxed", "--quiet", "--container_image", IMAGE,
        "--container_runtime", "podman", "--container_bind", *host_python_binds(),
    ]  # fmt: skip
    env = {**podman_env, "PYTHONPATH": str(repo), "WANDB_MODE": "offline"}  # the CLI's, not the image's
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
        assert result["code_digest"] == manifest["key"] and result["data_digest"] == "data-v3"
        assert re.fullmatch(r"[0-9a-f]{16}", result["env_digest"])
        assert result["image_digest"] == (image_id if image_id.startswith("sha256:") else f"sha256:{image_id}")
    imported = sorted(p.read_text() for p in cv.glob("*/imported_from.txt"))
    assert imported == [str(cv / "_code" / manifest["key"] / "labpkg" / "task.py")] * 2
