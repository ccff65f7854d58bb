"""Git work trees holding a task, for the provenance tests and benchmark (issue 24): a tree written and committed,
then edited, as a researcher's repository is when they submit. Not used by nestling itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

DATA_DIGEST = "data-v1"
PROBE_TASK = f'''
import os

from nestling.tasks.sleep import SleepTask


class Probe(SleepTask):
    """A sleep task that writes where its module was imported from into its run dir, and versions its data."""

    def data_digest(self):
        return "{DATA_DIGEST}"

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
    """git's stdout in `repo` (raises when git fails)."""
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit_all(repo: Path, message: str = "code") -> str:
    """Commit everything git sees in `repo` (a fixed author, no config needed); the new commit."""
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def code_tree(root: Path, files: dict[str, str | bytes], gitignore: str = "") -> Path:
    """A git work tree at `root` holding `files` (text or bytes), committed once."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    if gitignore:
        (root / ".gitignore").write_text(gitignore)
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (root / rel).write_bytes(content)
        else:
            (root / rel).write_text(content)
    commit_all(root)
    return root


def probe_tree(root: Path, package: str) -> Path:
    """A src/ layout tree whose `package`.task:Probe is PROBE_TASK, committed."""
    return code_tree(root, {f"src/{package}/__init__.py": "", f"src/{package}/task.py": PROBE_TASK})
