"""The Python API on real (tiny) sweeps of the sleep task (issue 14 §5): the same plan and the same best as the
command line, tables as polars frames."""

from __future__ import annotations

import os
import re
from pathlib import Path

import polars as pl
import pytest
from support import cli

import nestling
from nestling.commands.detach import Stopped
from nestling.core.tree import naming
from nestling.tasks.sleep import SleepTask

pytestmark = pytest.mark.e2e

FAST = {"n_seeds": 1, "max_epochs": 1, "accelerator": "cpu", "hp": {"sleep_s": 0}, "quiet": True}


def test_a_tune_from_python_picks_the_best_the_command_line_picks(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = [0.2, 0.8, 0.5]\n")
    common = {"hpconfig": str(space), "sampler": "grid", "n_trials": 3, "n_folds": 2, "tune_seed": 7}
    result = nestling.tune(SleepTask(), name="py", artifact_dir=str(tmp_path / "art"), **common, **FAST)
    assert (result.kind, result.name, result.exit_code) == ("tune", "py", 0)
    assert result.dir.resolve() == (tmp_path / "art" / "py").resolve()
    assert isinstance(result.run_infos, pl.DataFrame) and result.run_infos.height == 3 * 2
    assert set(result.run_infos.get_column("status")) == {"success"}
    tune_infos = result.tune_infos
    assert tune_infos is not None and tune_infos.height == 3
    assert result.best is not None and result.best.hparams["value"] == 0.8
    assert result.best.score == pytest.approx(0.8, abs=1e-6)  # logged as float32

    argv = ["tune", "--task", "sleep", "--name", "sh", "--artifact_dir", str(tmp_path / "art"),
            "--hpconfig", str(space), "--sampler", "grid", "--n_trials", "3", "--n_folds", "2", "--tune_seed", "7",
            "--n_seeds", "1", "--max_epochs", "1", "--accelerator", "cpu", "--hp", "sleep_s=0"]  # fmt: skip
    shell = cli(*argv, env={**os.environ, "WANDB_MODE": "offline"})
    assert shell.returncode == 0, shell.stderr
    best_line = re.search(r"best[^:\n]*: (\S+)", shell.stdout)  # "best: NAME ..." or "best (score): NAME ..."
    assert best_line is not None, shell.stdout
    assert best_line.group(1).removeprefix("sh-") == result.best.cv_name.removeprefix("py-")  # same trial index

    loaded = nestling.load(result.dir / result.best.cv_name)  # any dir inside the tree finds its plan
    assert loaded.dir == result.dir and loaded.kind == "tune" and loaded.best.cv_name == result.best.cv_name


@pytest.fixture(scope="module")
def pycv(tmp_path_factory: pytest.TempPathFactory) -> tuple[nestling.Result, Path]:
    """One cv from Python, read by the tests below (the reading test rewrites its table, as collect does)."""
    art = tmp_path_factory.mktemp("pycv")
    return nestling.cv(task="sleep", n_folds=3, name="pycv", artifact_dir=str(art), **FAST), art


def test_a_cv_from_python_returns_its_runs(pycv: tuple[nestling.Result, Path]) -> None:
    result, art = pycv
    assert (result.kind, result.exit_code) == ("cv", 0)
    assert result.run_infos.height == 3 and result.tune_infos is None
    assert result.best is not None and result.best.score == pytest.approx(0.5) and result.best.n_success == 3
    with pytest.raises(nestling.UsageError, match="already exists"):  # the same name twice: refused, not exit
        nestling.cv(task="sleep", n_folds=3, name="pycv", artifact_dir=str(art), **FAST)


def test_report_and_retrain_from_python(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The docs page's flow (python.md): a tune with a test split, its report, the retrain of its best and its test
    score; quiet=True prints nothing, not even the outcome line the command line's --quiet keeps (issue 21 #8)."""
    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = [0.2, 0.8]\n")
    tune = nestling.tune("sleep", hpconfig=space, sampler="grid", n_trials=2, n_folds=2, test_split="random",
                         name="flow", artifact_dir=tmp_path / "art", **FAST)  # fmt: skip
    assert capfd.readouterr() == ("", "")  # quiet: no progress, no table, no outcome line, no worker output
    assert tune.exit_code == 0 and tune.best is not None and tune.best.hparams["value"] == 0.8
    assert tune.final_infos is None and tune.test_score is None  # nothing retrained yet
    report = nestling.report(tune.dir, png=False)
    assert report.exit_code == 0 and report.report_html.is_file() and report.dir == tune.dir.resolve()
    assert capfd.readouterr().out == f"report: {tune.dir.resolve() / 'report.html'}\n"  # not quiet: as the CLI
    figures = naming.report_figures_dir(tune.dir)
    assert not list(figures.glob("*.png"))  # png=False: the page only
    assert nestling.report(tune.dir, quiet=True).exit_code == 0 and capfd.readouterr() == ("", "")
    pngs = sorted(figures.glob("*.png"))  # png by default: one per figure of the page
    assert len(pngs) >= 3 and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs), pngs

    final = nestling.retrain(tune.dir, n_seeds=2, quiet=True)
    assert capfd.readouterr() == ("", "")
    assert (final.kind, final.name, final.exit_code) == ("retrain", "flow-final", 0)
    assert final.dir == tune.dir.resolve() / "flow-final"
    assert final.run_infos.height == 2 and set(final.run_infos.get_column("status")) == {"success"}
    infos = final.final_infos
    assert infos is not None and infos.get_column("row").to_list() == ["seed", "seed", "mean", "std", "sem"]
    score = final.test_score  # the sleep task tests at its `value`: 0.8 on every seed
    assert score is not None and score.mean == pytest.approx(0.8, abs=1e-6) and score.std == pytest.approx(0.0)
    means = infos.filter(pl.col("row") == "mean").get_column("run_score").to_list()
    assert means == [pytest.approx(score.mean)]  # the same number the table holds
    assert tune.test_score == score and tune.final_infos is not None  # a tune's Result finds its retrain
    again = nestling.retrain(tune.dir)  # exists: resumed, nothing to do; not quiet, it says so
    assert again.exit_code == 0 and "every run succeeded already" in capfd.readouterr().out


def test_the_reading_commands_from_python_return_what_the_command_line_prints(
    pycv: tuple[nestling.Result, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """status, collect, sync, stop and doctor: the functions the command line calls, their results as values."""
    cv, _ = pycv
    capfd.readouterr()
    status = nestling.status(cv.dir / "pycv-run-f0s42-nope")  # any path inside the tree finds its plan
    assert status.counts["success"] == 3 and [r.state for r in status.runs] == ["success"] * 3
    assert status.supervisor is None and not status.active
    shown = capfd.readouterr().out
    assert shown.startswith("cv pycv: 3 runs  success=3") and shown == cli("status", str(cv.dir)).stdout

    (cv.dir / "run_infos.parquet").unlink()
    collected = nestling.collect(cv.dir, quiet=True)
    assert capfd.readouterr() == ("", "") and collected.run_infos.height == 3  # the table is written again
    assert nestling.sync(cv.dir, dry_run=True).pending == []  # no W&B run to upload
    assert nestling.stop(cv.dir) is Stopped.NOTHING
    assert "nothing to stop" in capfd.readouterr().out

    checks = nestling.doctor("sleep", n_folds=2, artifact_dir=tmp_path / "new", quiet=True)
    assert capfd.readouterr() == ("", "")
    found = {c.name: c.status for c in checks}
    assert found["task"] == "ok" and found["cv plan"] == "ok" and "problem" not in found.values()
    with pytest.raises(nestling.UsageError, match="--fold_method 'bogus' is not one of"):
        nestling.doctor("sleep", fold_method="bogus")  # type: ignore[arg-type]
