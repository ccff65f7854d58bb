"""What the console shows at the end of a plan and in `nestling status` (issue 21 #5, #6, #12): numbers whole at
any terminal width, columns that do not fit left out and named, a state column, pruned runs counted, plurals, no
`± nan` and no `score nan`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bowl_trees import bowl_tune, fail
from rich.console import Console

from nestling.commands.status import print_status, read_status
from nestling.plan.store import load_plan
from nestling.read import collect as C
from nestling.read import console_table as T
from nestling.read import summary as S


def printed(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int, root: Path) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    S.print_summary(C.collect(root))
    return capsys.readouterr().out


def body_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("│")]


@pytest.fixture
def pruned_tune(tmp_path: Path) -> Path:
    return bowl_tune(tmp_path, "pruned", "--sampler", "tpe", "--pruner", "successive-halving", n_trials=12)


def test_an_80_column_tune_table_keeps_every_number_whole(
    pruned_tune: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = printed(capsys, monkeypatch, 80, pruned_tune)
    assert all(len(line) <= 80 for line in out.splitlines() if line.startswith(("│", "┃", "┏", "└")))
    rows = body_rows(out)
    assert len(rows) == 12  # one line per trial: nothing wrapped
    assert not re.search(r"\d…|…\d|± nan", out)  # no number cut short, no spread that is not one
    infos = C.tune_table(C.collect(pruned_tune).cvs)
    for row, (score, state) in zip(rows, infos.sort("rank").select("score", "state").iter_rows(), strict=True):
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert T.significant(score) in cells and state in cells
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    assert "state" in header and "score" in header and "lr" in header


def test_columns_that_do_not_fit_are_left_out_and_named(
    pruned_tune: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wide = printed(capsys, monkeypatch, 200, pruned_tune)
    assert "not shown" not in wide and "runs" in wide.splitlines()[1] + wide.splitlines()[2]
    narrow = printed(capsys, monkeypatch, 60, pruned_tune)
    note = next(line for line in narrow.splitlines() if line.startswith("not shown at 60 columns: "))
    assert "tune_infos.parquet" in note
    assert all(len(line) <= 60 for line in narrow.splitlines() if line.startswith(("│", "┃")))
    assert len(body_rows(narrow)) == 12


def test_pruned_runs_and_trials_are_counted_in_the_summary(
    pruned_tune: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    collected = C.collect(pruned_tune)
    counts = collected.counts
    out = printed(capsys, monkeypatch, 80, pruned_tune)
    line = next(line for line in out.splitlines() if line.startswith("runs: "))
    pruned = collected.n_pruned_trials
    assert line == f"runs: {counts['success']} success, {counts['pruned']} pruned ({pruned} trials pruned)"
    assert counts["success"] + counts["pruned"] == len(collected.plan.runs)


def test_no_score_is_said_in_words(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = bowl_tune(tmp_path, "failed")
    for run in load_plan(root).runs:
        fail(run.dir)
    out = printed(capsys, monkeypatch, 80, root)
    assert "score nan" not in out and "± nan" not in out
    assert "best (score): none; no trial has a score yet (18 failed)" in out


def test_a_cv_table_at_80_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A cv of several metrics with long names: headers break after their prefix, numbers stay whole."""
    root = bowl_tune(tmp_path, "cvs", n_trials=1)
    for run in load_plan(root).runs:  # more metrics, with long names and awkward values
        path = run.dir / "run_result.json"
        text = path.read_text().replace('"val/score": ', '"val/JaccardIndex": 0.000123456, "val/Recall": '
                                        '123456.789, "train/loss_epoch": 1e-9, "val/score": ')  # fmt: skip
        path.write_text(text)
    collected = C.collect(root)
    monkeypatch.setenv("COLUMNS", "80")
    columns, hidden = S._cv_columns(collected, collected.cvs[0], all_columns=True)
    assert hidden == 0
    T.print_table(Console(), "cv", columns, "see run_infos.parquet")
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert len(body_rows(out)) == 3 and not re.search(r"\d…|…\d", out)
    assert "0.0001235" in out and "1.235e+05" in out


def test_significant_digits_and_spread() -> None:
    assert [T.significant(v) for v in (0.001284017, 5.1e-05, 0.41784, 3, None, float("nan"))] == [
        "0.001284", "5.1e-05", "0.4178", "3", "", "nan"
    ]  # fmt: skip
    assert T.plus_minus(float("nan")) == "" and T.plus_minus(0.02985) == "± 0.03"
    assert T.header("val/JaccardIndex") == "val/\nJaccardIndex" and T.header("score") == "score"


def test_counts_in_the_singular(tmp_path: Path) -> None:
    collected = C.collect(bowl_tune(tmp_path, "one", n_trials=1, n_folds=2), write=False)
    cv = collected.cvs[0]
    one_seed = type(cv)(**{**cv.__dict__, "n_runs": 1, "n_success": 1})
    assert S.test_score_line(one_seed).endswith("1 of 1 seed)")
    assert "± nan" not in S.test_score_line(one_seed)


def test_status_counts_pending_runs_instead_of_listing_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = bowl_tune(tmp_path, "waiting", n_trials=20, run=False)
    monkeypatch.setenv("COLUMNS", "80")
    print_status(read_status(root))
    out = capsys.readouterr().out
    assert f"60 pending: not listed; nestling status {root} --all lists every run" in out
    assert "waiting-cv0-run" not in out
    print_status(read_status(root), show_all=True)
    assert len(body_rows(capsys.readouterr().out)) == 60
