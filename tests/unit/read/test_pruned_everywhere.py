"""Pruned runs and trials are counted and named wherever runs are counted (issue 21 #5): the report's header and its
problems section, the outcome line, the summary after a resume. A pruned tune of the bowl task, simulated."""

from __future__ import annotations

from pathlib import Path

import pytest
from bowl_trees import bowl_tune

from nestling.commands.cli import main
from nestling.commands.start import outcome_line
from nestling.read import collect as C
from nestling.read.report.compose import write_report


@pytest.fixture
def pruned_tune(tmp_path: Path) -> Path:
    return bowl_tune(tmp_path, "pr", "--sampler", "tpe", "--pruner", "successive-halving", n_trials=8)


def test_the_report_counts_and_names_pruned_trials(pruned_tune: Path) -> None:
    collected = C.collect(pruned_tune)
    counts, trials = collected.counts, collected.n_pruned_trials
    assert counts["pruned"] > 0 and counts["failed"] == counts["missing"] == 0
    page = write_report(pruned_tune, collected, png=False).read_text()
    total = counts["success"] + counts["pruned"]
    assert f"8 trials, {total} runs: {counts['success']} success, 0 failed, 0 missing, {counts['pruned']} pruned " \
           f"({trials} trials pruned)." in page  # fmt: skip
    assert "None: every run succeeded" not in page
    assert f"{trials} trials pruned (pr-cv" in page and f"{counts['pruned']} runs never started" in page
    assert "Nothing else: every run that ran succeeded with a stable score." in page


def test_the_outcome_line_counts_pruned_runs(pruned_tune: Path) -> None:
    collected = C.collect(pruned_tune)
    counts, trials = collected.counts, collected.n_pruned_trials
    assert outcome_line(collected) == (
        f"tune pr: {counts['success']} of {counts['success'] + counts['pruned']} runs succeeded, "
        f"{counts['pruned']} pruned ({trials} trials stopped early)"
    )  # and no "see nestling status": nothing failed or is missing


def test_a_resume_of_a_pruned_tune_says_so(pruned_tune: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["tune", "--resume", "pr", "--artifact_dir", str(pruned_tune.parent)]) == 0
    out = capsys.readouterr()
    counts = C.collect(pruned_tune, write=False).counts
    assert "tune pr: every run succeeded or was pruned already; nothing to resume" in out.out
    assert f"runs: {counts['success']} success, {counts['pruned']} pruned (" in out.out
    assert f"{counts['pruned']} pruned (" in out.err  # the outcome line
