"""--quiet silences the progress bar and the tables, never the outcome: one line on stderr says how the plan ended
(issue 12 #8: a quiet cv whose every run failed used to exit 1 without a word)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import cli

pytestmark = pytest.mark.e2e

QUIET_CV = ["cv", "--task", "sleep", "--hp", "sleep_s=0.0", "--max_epochs", "1", "--n_seeds", "1", "--n_folds", "2",
            "--accelerator", "cpu", "--quiet"]  # fmt: skip


def test_quiet_cv_whose_every_run_failed_says_so_on_stderr(tmp_path: Path) -> None:
    # lr=-1 is a number, as the task's default (preflight accepts it), that SGD refuses: every run fails in fit
    done = cli(*QUIET_CV, "--hp", "lr=-1", "--artifact_dir", str(tmp_path), "--name", "allfail")
    assert done.returncode == 1
    assert done.stdout == ""
    root = tmp_path / "_cross_validations" / "allfail"
    assert done.stderr.splitlines()[-1] == (
        "cv allfail: 0 of 2 runs succeeded; first error: ValueError: Invalid learning rate: -1.0; "
        f"see nestling status {root}"
    )


def test_quiet_cv_that_succeeded_prints_only_its_outcome(tmp_path: Path) -> None:
    done = cli(*QUIET_CV, "--artifact_dir", str(tmp_path), "--name", "fine")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == "cv fine: 2 of 2 runs succeeded"
