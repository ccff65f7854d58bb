"""Inputs that used to end in a traceback: each is one stderr line and exit 2, with nothing written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nestling.commands.cli import main

SLEEP = ["--task", "sleep", "--accelerator", "cpu", "--n_seeds", "1", "--max_epochs", "1", "--quiet"]

TINY_TASK = '''
import polars as pl
from nestling.core.ml.task import Task


class Tiny(Task):
    """6 samples in 6 regions, labels 3 x 0 and 3 x 1."""

    def metadata(self):
        return pl.DataFrame({"sample_id": [f"s{i}" for i in range(6)], "region": [f"r{i}" for i in range(6)],
                             "label": [0, 0, 0, 1, 1, 1]})

    def default_hparams(self):
        return {"lr": 0.1}

    def build_model(self, hparams):
        raise AssertionError("never trained")

    def build_datamodule(self, hparams, split):
        raise AssertionError("never trained")
'''


@pytest.fixture(autouse=True)
def _no_slurm_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dry runs must not depend on (or ask) a SLURM controller on this host."""
    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda n, *a, **k: None if n in ("sinfo", "scontrol", "squeue") else real(n, *a, **k)
    )


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("nestling: error: "), lines[0]
    return lines[0]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("launcher", [["--launcher", "local"], ["--launcher", "slurm", "--dry_run"]])
def test_region_stratified_label_smaller_than_n_folds(
    launcher: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tinytask.py").write_text(TINY_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    art = tmp_path / "art"
    argv = ["cv", "--task", "tinytask:Tiny", "--accelerator", "cpu", "--n_seeds", "1", "--quiet",
            "--fold_method", "region-stratified", "--n_folds", "4", *launcher, "--artifact_dir", str(art)]  # fmt: skip
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "--n_folds 4 is more than the 3 samples of label '0'" in line and "--n_folds 3 or fewer" in line
    assert not art.exists()


@pytest.mark.parametrize("below", ["", "sub"])
def test_artifact_dir_that_is_a_file(
    below: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "results.csv"
    taken.write_text("a,b\n")
    art = taken / below if below else taken
    for kind, extra in (("cv", ["--launcher", "local"]), ("cv", ["--launcher", "slurm", "--dry_run"]),
                        ("run", ["--launcher", "local"])):  # fmt: skip
        assert main([kind, *SLEEP, "--n_folds", "2", *extra, "--artifact_dir", str(art)]) == 2
        line = _one_error_line(capsys)
        assert f"{str(taken)!r} exists and is not a directory" in line and "--artifact_dir" in line
        assert _files(tmp_path) == ["results.csv"] and taken.read_text() == "a,b\n"


def test_relative_artifact_dir_under_a_directory_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["cv", *SLEEP, "--n_folds", "2", "--launcher", "slurm", "--dry_run", "--artifact_dir", "art"]) == 0
    assert os.path.isdir(tmp_path / "art" / "_dry_run")


@pytest.mark.parametrize(
    ("hp", "said"),
    [
        ("lr=abc", "hyperparameter lr='abc' (--hp / [hparams]) is text, but the task's default lr=0.01 is a number: "
                   "e.g. --hp lr=0.01"),
        ("lr=true", "is a boolean, but the task's default lr=0.01 is a number"),
        ("fail_if_val_contains=3", """is a number, but the task's default fail_if_val_contains='' is text: e.g. """
                                   """--hp fail_if_val_contains='"3"'"""),
    ],
)  # fmt: skip
def test_a_fixed_hyperparameter_of_the_wrong_kind_is_refused_at_preflight(
    hp: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21 #11: `--hp width=abc` failed every run at run time (exit 1); the task's defaults tell its kinds."""
    art = tmp_path / "art"
    assert main(["cv", *SLEEP, "--n_folds", "2", "--hp", hp, "--artifact_dir", str(art)]) == 2
    assert said in _one_error_line(capsys)
    assert not art.exists()


def test_numbers_stand_in_for_each_other_and_a_quoted_number_is_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for hp in ("lr=1", "sleep_s=0", 'fail_if_val_contains="3"'):
        assert main(["cv", *SLEEP, "--n_folds", "2", "--hp", hp, "--launcher", "slurm", "--dry_run",
                     "--artifact_dir", str(tmp_path / "art")]) == 0, hp  # fmt: skip


def test_a_dry_run_of_a_tune_with_retrain_says_what_the_retrain_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21 #13: the dry run named the tune's trials and scripts, never the retrain that follows."""
    space = tmp_path / "hp.toml"
    space.write_text("[hyperparameters]\nvalue = [0.3, 0.7]\n")
    argv = ["tune", *SLEEP, "--hpconfig", str(space), "--n_trials", "2", "--n_folds", "2", "--test_split", "random",
            "--retrain", "--dry_run", "--artifact_dir", str(tmp_path / "art"), "--name", "t"]  # fmt: skip
    for launcher, when in (("local", "then"), ("slurm", "a SLURM job after the collector job runs")):
        assert main([*argv, "--launcher", launcher]) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith(f"--retrain: {when} nestling retrain {tmp_path / 'art' / 't'}: the best trial (by "
                               "--select score) trained on 32 samples (train + val) with 1 seed")  # fmt: skip
        assert line.endswith("tested on the 8 test samples, as t-final")
    assert not (tmp_path / "art" / "t").exists()
