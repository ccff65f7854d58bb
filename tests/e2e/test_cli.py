"""End to end through the command line: a real tune, a failing fold, bad input, devices and resume.

cv-parallel workers: tests/conformance (the local case); W&B offline files: tests/e2e/test_tracking_offline.py.

Every nestling call is a subprocess, as a user would run it. Models are tiny and train one epoch on CPU.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import nestling
from nestling.core.ml.folds import make_splits
from nestling.core.ml.scoring import DEFAULT_SCORING, cv_score, parse_scoring_metrics, run_score
from nestling.core.tree.run_result import RESULT_KEYS
from nestling.tasks.sleep import SleepTask

pytestmark = pytest.mark.e2e

RUN_ID = r"[a-z0-9]{8}"
REQUIRED_RUN_INFOS = {
    "run_name", "run_id", "fold", "seed", "status", "error", "duration", "checkpoint", "is_unstable", "score",
    "score_is_unstable",
}  # fmt: skip
SYNTHETIC_METRICS = {
    "val/JaccardIndex",
    "val/Recall",
    "val/Precision",
    "val/F1Score",
    "val/loss",
    "train/loss",
}
FAST = ["--max_epochs", "1", "--n_seeds", "1", "--accelerator", "cpu", "--quiet"]
SLEEP = ["--task", "sleep", "--hp", "sleep_s=0.0", *FAST]


def nestling_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:  # a deadline for a loaded machine (a 4-run tune took over 120 s with -n 4)
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "nestling.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def run_dirs(cv_dir: Path) -> list[Path]:
    return sorted(p for p in cv_dir.iterdir() if p.is_dir() and "-run-" in p.name)


def results(cv_dir: Path) -> list[dict]:
    return [json.loads((d / "run_result.json").read_text()) for d in run_dirs(cv_dir)]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- a tune: 2 trials x 2 folds x 1 seed on the synthetic task --------------------------------------------------


@pytest.fixture(scope="module")
def tune(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tune")
    hp = base / "hp.toml"
    # batch_size 4 gives enough steps in one epoch for non-zero metrics, so scores are numbers, not NaN
    hp.write_text("[hyperparameters]\nlr = [0.05, 0.1]\nbatch_size = 4\n")
    art = base / "art"
    args = [
        "tune", "--hpconfig", str(hp), "--n_trials", "2", "--sampler", "grid", "--n_folds", "2",
        "--artifact_dir", str(art), "--name", "t1", *FAST,
    ]  # fmt: skip
    ok(nestling_cli(*args))
    return art


@pytest.mark.min_versions
def test_tune_layout(tune: Path) -> None:
    assert [p.name for p in tune.iterdir()] == ["t1"]
    tdir = tune / "t1"
    assert sorted(p.name for p in tdir.iterdir() if p.is_dir() and p.name.startswith("t1")) == [
        "t1-cv0",
        "t1-cv1",
    ]
    for name in ("plan.json", "splits.json", "tune_infos.parquet", "run_infos.parquet"):
        assert (tdir / name).is_file(), name
    for i in (0, 1):
        cv = tdir / f"t1-cv{i}"
        dirs = run_dirs(cv)
        assert len(dirs) == 2
        by_fold = {int(re.fullmatch(rf"t1-cv{i}-run-f(\d)s42-{RUN_ID}", d.name).group(1)): d for d in dirs}
        assert sorted(by_fold) == [0, 1]
        for d in dirs:
            assert (d / "run_spec.json").is_file()
            assert (d / "run_result.json").is_file()
        assert (cv / "run_infos.parquet").is_file()


@pytest.mark.min_versions
def test_tune_run_results(tune: Path) -> None:
    for i in (0, 1):
        cv = tune / "t1" / f"t1-cv{i}"
        lrs = set()
        for d, result in zip(run_dirs(cv), results(cv), strict=True):
            assert sorted(result) == sorted(RESULT_KEYS)
            assert len(result) == len(RESULT_KEYS) == 39
            assert result["status"] == "success"
            assert result["error"] is None
            assert d.name == f"{result['run_name']}-{result['run_id']}"
            assert result["run_name"] == f"t1-cv{i}-run-f{result['fold']}s42"
            assert (result["cv_name"], result["tune_name"], result["seed"]) == (f"t1-cv{i}", "t1", 42)
            assert result["hparams"] == {
                "lr": result["hparams"]["lr"],
                "base_channels": 8,
                "batch_size": 4,
                "depth": 2,
            }
            lrs.add(result["hparams"]["lr"])
            assert set(result["metrics"]) == SYNTHETIC_METRICS
            assert Path(result["checkpoint"]).is_file()
            assert Path(result["checkpoint"]).parent == d / "checkpoints"
            assert result["duration"] > 0
            for key in ("started_at", "finished_at"):
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result[key])
            assert isinstance(result["pid"], int)
            assert (result["world_size"], result["attempt"]) == (1, 1)
            assert result["slurm_job_id"] is None
            assert result["nestling_version"] == nestling.__version__
            spec = json.loads((d / "run_spec.json").read_text())
            assert (spec["run_id"], spec["fold"], spec["seed"]) == (result["run_id"], result["fold"], 42)
        assert len(lrs) == 1  # one hyperparameter set per cv


def recomputed(row: dict) -> tuple[float, bool]:
    metrics = {k: v for k, v in row.items() if "/" in k and v is not None}
    return run_score(metrics, parse_scoring_metrics(DEFAULT_SCORING), "geometric")


@pytest.mark.min_versions
def test_tune_run_infos_and_scores(tune: Path) -> None:
    tdir = tune / "t1"
    tune_infos = pl.read_parquet(tdir / "tune_infos.parquet")
    assert tune_infos.height == 2
    assert {"cv_name", "hp_index", "lr", "score", "score_is_unstable", "n_runs", "n_failed"} <= set(
        tune_infos.columns
    )
    assert tune_infos["cv_name"].to_list() == ["t1-cv0", "t1-cv1"]
    assert tune_infos["hp_index"].to_list() == [0, 1]
    assert sorted(tune_infos["lr"].to_list()) == [0.05, 0.1]
    assert tune_infos["n_runs"].to_list() == [2, 2]
    assert tune_infos["n_failed"].to_list() == [0, 0]
    assert tune_infos["batch_size"].to_list() == [
        4,
        4,
    ]  # constants of the space and task defaults are columns too
    assert tune_infos["depth"].to_list() == [2, 2]
    numeric_scores = 0
    for trial in tune_infos.iter_rows(named=True):
        cv = tdir / trial["cv_name"]
        infos = pl.read_parquet(cv / "run_infos.parquet")
        assert infos.height == 2
        assert set(infos.columns) >= REQUIRED_RUN_INFOS | SYNTHETIC_METRICS
        by_id = {r["run_id"]: r for r in results(cv)}
        assert sorted(infos["run_id"].to_list()) == sorted(by_id)
        per_run = []
        for row in infos.iter_rows(named=True):
            result = by_id[row["run_id"]]
            assert (row["run_name"], row["fold"], row["seed"]) == (result["run_name"], result["fold"], 42)
            assert (row["status"], row["error"]) == ("success", None)
            assert (row["checkpoint"], row["duration"]) == (result["checkpoint"], result["duration"])
            for name in SYNTHETIC_METRICS:
                assert row[name] == result["metrics"][name]
            score, unstable = recomputed(row)
            assert row["is_unstable"] is unstable
            j, r = row["val/JaccardIndex"], row["val/Recall"]
            assert unstable is (j == 0 or r == 0)
            if not unstable:
                assert row["run_score"] == score == pytest.approx(math.sqrt(j * r), rel=1e-12)
                numeric_scores += 1
            else:
                assert math.isnan(row["run_score"])
            per_run.append((score, unstable, row["status"]))
        expected, expected_unstable = cv_score(per_run)
        for column in (infos["score"], pl.Series([trial["score"]])):
            values = column.to_list()
            if math.isnan(expected):
                assert all(math.isnan(v) for v in values)
            else:
                assert values == [expected] * len(values)
        assert infos["score_is_unstable"].to_list() == [expected_unstable] * 2
        assert trial["score_is_unstable"] is expected_unstable
        assert trial["lr"] == by_id[infos["run_id"][0]]["hparams"]["lr"]
    assert numeric_scores > 0  # otherwise the recomputation compared only NaNs

    all_runs = pl.read_parquet(tdir / "run_infos.parquet")
    assert all_runs.height == 4
    assert {"cv_name", "lr"} <= set(all_runs.columns)
    assert sorted(all_runs["cv_name"].to_list()) == ["t1-cv0", "t1-cv0", "t1-cv1", "t1-cv1"]


@pytest.mark.min_versions
def test_collect_is_idempotent(tune: Path) -> None:
    tdir = tune / "t1"
    files = [tdir / "tune_infos.parquet", tdir / "run_infos.parquet", tdir / "t1-cv0" / "run_infos.parquet"]
    ok(nestling_cli("collect", str(tdir), "--quiet"))
    first = [pl.read_parquet(f) for f in files]
    ok(nestling_cli("collect", str(tdir), "--quiet"))
    for f, before in zip(files, first, strict=True):
        assert pl.read_parquet(f).equals(before, null_equal=True)
    files[2].unlink()
    ok(nestling_cli("collect", str(tdir / "t1-cv0"), "--quiet"))  # from inside the tune: finds the tune root
    assert pl.read_parquet(files[2]).equals(first[2], null_equal=True)
    assert not list(tdir.rglob("*.tmp"))


# -- a failing fold ---------------------------------------------------------------------------------------------


def fold1_only_sample() -> str:
    splits = make_splits(SleepTask().metadata(), fold_method="kfold", n_folds=3, fold_seed=42)
    sample = splits[1].val[0]
    assert [sample in s.val for s in splits] == [False, True, False]
    return sample


@pytest.fixture(scope="module")
def failing_cv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    art = tmp_path_factory.mktemp("fail") / "art"
    sample = fold1_only_sample()
    args = [
        "cv", *SLEEP, "--hp", f"fail_if_val_contains={sample}", "--n_folds", "3", "--artifact_dir", str(art),
        "--name", "flaky",
    ]  # fmt: skip
    ok(nestling_cli(*args))
    return art, sample


def test_failing_fold_is_recorded_and_others_succeed(failing_cv: tuple[Path, str]) -> None:
    art, sample = failing_cv
    cv = art / "_cross_validations" / "flaky"
    by_fold = {r["fold"]: r for r in results(cv)}
    assert sorted(by_fold) == [0, 1, 2]
    message = f"RuntimeError: injected failure: sample {sample} in val"
    assert (by_fold[1]["status"], by_fold[1]["error"], by_fold[1]["metrics"]) == ("failed", message, {})
    assert sorted(by_fold[1]) == sorted(RESULT_KEYS)
    for fold in (0, 2):
        assert (by_fold[fold]["status"], by_fold[fold]["error"]) == ("success", None)
        assert by_fold[fold]["metrics"]["val/JaccardIndex"] == 0.5
    infos = pl.read_parquet(cv / "run_infos.parquet").sort("fold")
    assert infos["status"].to_list() == ["success", "failed", "success"]
    assert infos["error"].to_list() == [None, message, None]
    assert infos["is_unstable"].to_list() == [False, True, False]
    assert infos["score_is_unstable"].to_list() == [True, True, True]
    run_scores = infos["run_score"].to_list()
    assert run_scores[0] == run_scores[2] == 0.5  # geometric(0.5, 0.5), the sleep task's constants
    assert math.isnan(run_scores[1])
    assert infos["score"].to_list() == [0.5, 0.5, 0.5]  # mean of the successful runs' scores


def test_existing_name_is_refused_and_leaves_the_first_untouched(failing_cv: tuple[Path, str]) -> None:
    art, _ = failing_cv
    before = snapshot(art)
    proc = nestling_cli("cv", *SLEEP, "--n_folds", "3", "--artifact_dir", str(art), "--name", "flaky")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nestling: error: ") and "'flaky'" in lines[0]
    assert snapshot(art) == before


# -- bad input: exit 2, one line naming the value, nothing created ----------------------------------------------


def bad_input_cases(tmp: Path) -> list[tuple[list[str], str]]:
    malformed = tmp / "bad.toml"
    malformed.write_text("max_epochs = = 3\n")
    bad_space = tmp / "space.toml"
    bad_space.write_text('[hyperparameters]\nlr = { distribution = "gaussian", low = 0.1, high = 1.0 }\n')
    return [
        (["cv", "--task", "nope:Nope"], "nope:Nope"),
        (["cv", "--max_epocs", "1"], "--max_epocs"),
        (["cv", "--config", str(malformed)], str(malformed)),
        (["tune", "--hpconfig", str(bad_space), "--n_trials", "1"], "gaussian"),
        (["cv", "--fold_method", "region", "--n_folds", "50"], "50"),
        (["cv", "--devices", "x"], "'x'"),
        (["cv", "--name", "a/b"], "'a/b'"),
        (["cv", "--hp", "nope=1"], "'nope'"),
        (["cv", "--strategy", "tune-parallel"], "tune-parallel"),
    ]


@pytest.mark.parametrize("case", range(9))
@pytest.mark.min_versions
def test_bad_input(tmp_path: Path, case: int) -> None:
    args, value = bad_input_cases(tmp_path)[case]
    art = tmp_path / "art"
    proc = nestling_cli(*args, "--accelerator", "cpu", "--artifact_dir", str(art))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nestling: error: ")
    assert value in lines[0]
    assert not art.exists()


# -- help is fast: no torch -------------------------------------------------------------------------------------


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from nestling.cli import main\n"
        "rc = main(['--help'])\n"
        "try:\n"
        "    main(['tune', '--help'])\n"
        "    tune_rc = None\n"
        "except SystemExit as exc:\n"
        "    tune_rc = exc.code\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'wandb') if m in sys.modules)\n"
        "print('RESULT', rc, tune_rc, heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "RESULT 0 0 []"
    assert re.match(r"usage: nestling \{run,cv,tune,collect,status[,}]", proc.stdout)
    flags = [
        "--task", "--config", "--artifact_dir", "--name", "--hp", "--max_epochs", "--early_stopping_patience",
        "--fold_method", "--n_folds", "--fold_seed", "--test_split", "--test_fraction", "--test_regions",
        "--n_seeds", "--seeds", "--scoring_metric", "--multi_score_strategy", "--hpconfig", "--n_trials",
        "--sampler", "--tune_seed", "--accelerator", "--strategy", "--devices", "--num_nodes", "--wandb_project",
        "--wandb_entity", "--wandb_mode", "--launcher", "--quiet",
    ]  # fmt: skip
    missing = [f for f in flags if not re.search(rf"{re.escape(f)}[\s\]]", proc.stdout)]
    assert missing == []


@pytest.mark.parametrize("args", [["--help"], ["tune", "--help"]])
def test_help_exits_zero(args: list[str]) -> None:
    proc = nestling_cli(*args)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith("usage: nestling")


@pytest.mark.parametrize("strategy", ["ddp", "auto"])
def test_single_run_with_two_devices_on_the_local_launcher_does_not_hang(tmp_path: Path, strategy: str) -> None:
    """ddp/auto with two devices would re-launch the worker module (which then waits on its stdin forever): the
    run uses ddp_fork and trains with world size 2. The timeout turns a regression into a failure, not a hang."""
    art = tmp_path / "art"
    ok(nestling_cli("run", *SLEEP, "--strategy", strategy, "--devices", "2", "--name", "r",
                    "--artifact_dir", str(art), timeout=150))  # fmt: skip
    (run,) = (art / "_runs").glob("r-*")
    result = json.loads((run / "run_result.json").read_text())
    assert (result["status"], result["world_size"]) == ("success", 2)
    assert json.loads((run / "run_spec.json").read_text())["strategy"] == "ddp_fork"


@pytest.fixture(scope="module")
def finished_cv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-fold cv "fc" (its artifact dir) that the resume tests below copy, then change."""
    art = tmp_path_factory.mktemp("finished") / "art"
    ok(nestling_cli("cv", *SLEEP, "--n_folds", "2", "--name", "fc", "--artifact_dir", str(art)))
    return art


def test_forced_resume_trains_with_the_forced_devices(finished_cv: Path, tmp_path: Path) -> None:
    """`--force --strategy ddp --devices 2` is recorded in forced_changes AND the rerun trains on two processes."""
    art = tmp_path / "art"
    shutil.copytree(finished_cv, art)
    first, second = run_dirs(art / "_cross_validations" / "fc")
    (first / "run_result.json").unlink()
    ok(nestling_cli("cv", *SLEEP, "--resume", "fc", "--strategy", "ddp", "--devices", "2", "--max_epochs", "2",
                    "--force", "--artifact_dir", str(art), timeout=150))  # fmt: skip
    launches = json.loads((art / "_cross_validations" / "fc" / "launch.json").read_text())["launches"]
    assert sorted(launches[-1]["forced_changes"]) == sorted(
        ["--strategy 'auto' -> 'ddp'", "--devices ['auto'] -> ['2']", "--max_epochs 1 -> 2"]
    )
    rerun = json.loads((first / "run_result.json").read_text())
    assert (rerun["status"], rerun["world_size"]) == ("success", 2)
    assert json.loads((second / "run_result.json").read_text())["world_size"] == 1  # not rerun


def test_resume_of_a_moved_tree_works_in_the_moved_tree(finished_cv: Path, tmp_path: Path) -> None:
    """The tree is relocatable: resuming it where it was moved to reruns there and creates nothing at the old
    place (spec paths are stored relative to the plan root)."""
    art, moved = tmp_path / "art", tmp_path / "moved"
    shutil.copytree(finished_cv, art)
    built_at = snapshot(finished_cv)  # where the tree was written first: a path kept from there would write there
    (moved / "_cross_validations").mkdir(parents=True)
    (art / "_cross_validations" / "fc").rename(moved / "_cross_validations" / "fc")
    cv = moved / "_cross_validations" / "fc"
    first, _ = run_dirs(cv)
    (first / "run_result.json").unlink()
    ok(nestling_cli("cv", *SLEEP, "--resume", "fc", "--artifact_dir", str(moved)))
    assert not (art / "_cross_validations" / "fc").exists()
    assert snapshot(finished_cv) == built_at
    assert [r["status"] for r in results(cv)] == ["success", "success"]
    status = ok(nestling_cli("status", str(cv)))
    assert "success=2" in status.stdout and "lost=" not in status.stdout  # states no run is in are not named


def test_cv_with_a_ddp_variant_strategy_forks_instead_of_hanging(tmp_path: Path) -> None:
    """ddp_find_unused_parameters_true inside a cv would re-launch the worker (rank 0 then waits forever): it
    runs as ddp_fork_find_unused_parameters_true. fsdp, which has no fork variant, is refused up front."""
    art = tmp_path / "art"
    ok(nestling_cli("cv", *SLEEP, "--strategy", "ddp_find_unused_parameters_true", "--devices", "2",
                    "--n_folds", "2", "--name", "dv", "--artifact_dir", str(art), timeout=150))  # fmt: skip
    cv = art / "_cross_validations" / "dv"
    assert [(r["status"], r["world_size"]) for r in results(cv)] == [("success", 2), ("success", 2)]
    assert {json.loads((d / "run_spec.json").read_text())["strategy"] for d in run_dirs(cv)} == {
        "ddp_fork_find_unused_parameters_true"
    }
    refused = nestling_cli("cv", *SLEEP, "--strategy", "fsdp", "--devices", "2", "--artifact_dir", str(art))
    assert refused.returncode == 2 and "--strategy fsdp" in refused.stderr
