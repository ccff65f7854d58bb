"""`nestling retrain` (issue 14 §2) end to end on the local pool: a tiny sleep tune with a test split, then its
best configuration retrained on train + val with every seed and tested; resume; refusal without a test split."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from nestling.core.options.config import parse_config
from nestling.core.tree import naming
from nestling.plan.preflight import prepare
from nestling.plan.store import write_plan

pytestmark = pytest.mark.e2e

FAST = ["--max_epochs", "1", "--accelerator", "cpu", "--quiet"]


def nestling_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nestling.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def _tune(tmp: Path, name: str, *extra: str) -> Path:
    hp = tmp / "hp.toml"
    hp.write_text("[hyperparameters]\nvalue = [0.3, 0.7]\n")
    art = tmp / "art"
    ok(nestling_cli(
        "tune", "--task", "sleep", "--hp", "sleep_s=0.0", "--hpconfig", str(hp), "--sampler", "grid",
        "--n_trials", "2", "--n_folds", "2", "--n_seeds", "1", "--artifact_dir", str(art), "--name", name,
        *FAST, *extra,
    ))  # fmt: skip
    return art / name


@pytest.fixture(scope="module")
def tune(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tune(tmp_path_factory.mktemp("retrain"), "t", "--test_split", "random")


@pytest.mark.min_versions
def test_retrain_trains_the_best_on_train_and_val_and_tests_it(tune: Path) -> None:
    proc = ok(nestling_cli("retrain", str(tune), "--retrain_epochs", "1", "--n_seeds", "2"))
    final = tune / "t-final"
    # the retrain's plan: one split, every non-test sample of the tune for training, its test samples for testing
    tune_splits = json.loads((tune / naming.SPLITS).read_text())
    (split,) = json.loads((final / naming.SPLITS).read_text())
    assert split["test"] == tune_splits[0]["test"] and split["val"] == []
    assert sorted(split["train"]) == sorted({*tune_splits[0]["train"], *tune_splits[0]["val"]})
    assert not set(split["train"]) & set(split["test"])
    plan = json.loads((final / naming.PLAN).read_text())
    assert (plan["kind"], plan["name"], plan["n_folds"]) == ("retrain", "t-final", 1)
    assert plan["cvs"][0]["hparams"]["value"] == 0.7  # the best trial by score
    run_dirs = sorted(p.name for p in final.iterdir() if "-run-" in p.name)
    assert [re.sub(r"-[a-z0-9]{8}$", "", d) for d in run_dirs] == ["t-final-run-f0s21", "t-final-run-f0s42"]
    for d in run_dirs:
        result = json.loads((final / d / naming.RUN_RESULT).read_text())
        assert result["status"] == "success" and result["tune_name"] == "t"
        assert "val/JaccardIndex" not in result["metrics"]  # never validated
        assert Path(result["checkpoint"]).is_file()
    runs = pl.read_parquet(final / naming.RUN_INFOS)
    assert runs["test/JaccardIndex"].to_list() == pytest.approx([0.7, 0.7])  # logged as float32
    assert runs["run_score"].to_list() == pytest.approx([0.7, 0.7])
    infos = pl.read_parquet(final / naming.FINAL_INFOS)
    assert infos["row"].to_list() == ["seed", "seed", "mean", "std", "sem"]
    assert infos["seed"].to_list() == [42, 21, None, None, None]
    values = runs["test/JaccardIndex"].to_list()
    mean = sum(values) / 2
    std = math.sqrt(sum((v - mean) ** 2 for v in values))
    assert infos["test/JaccardIndex"].to_list() == pytest.approx([*values, mean, std, std / math.sqrt(2)])
    assert infos["run_score"].to_list()[2:] == pytest.approx([0.7, 0.0, 0.0])
    assert "test score 0.7 ± 0 (sem; std 0, 2 of 2 seeds)" in proc.stdout
    tune_plan = json.loads((tune / naming.PLAN).read_text())
    best = next(cv["cv_name"] for cv in tune_plan["cvs"] if cv["hparams"]["value"] == 0.7)
    assert f"retrain t-final: {best} (by score, score 0.7)" in proc.stdout
    # the tune's report is written again with the retrain (issue 21 #4); the retrain's runs have a page of their own
    assert f"report: {tune / naming.REPORT}" in proc.stdout
    page = (tune / naming.REPORT).read_text()
    assert "Retrain: test metrics" in page and f"Trial {best} retrained" in page and "test score 0.7" in page
    assert "t-final/report.html" in page and (final / naming.REPORT).is_file()
    # the choice of the winner (issue 25 #5): sure (its scores are exact: p_best 1, no optimism), and the realised gap
    assert f"{best} is the best of the 2 complete, stable trials in 100%" in page
    assert f"Retrain t-final of {best}: cv score 0.7, test score 0.7: realised gap cv - test 0" in page


def test_retrain_again_resumes_without_rerunning(tune: Path) -> None:
    final = tune / "t-final"
    if not (final / naming.PLAN).exists():
        ok(nestling_cli("retrain", str(tune), "--retrain_epochs", "1", "--n_seeds", "2"))
    before = {p.name: (p / naming.RUN_RESULT).stat().st_mtime for p in final.iterdir() if "-run-" in p.name}
    proc = ok(nestling_cli("retrain", str(tune), "--resume"))
    assert "nothing to resume" in proc.stdout
    after = {p.name: (p / naming.RUN_RESULT).stat().st_mtime for p in final.iterdir() if "-run-" in p.name}
    assert after == before
    refused = nestling_cli("retrain", str(tune), "--retrain_epochs", "2")
    assert refused.returncode == 2 and "--retrain_epochs choose a new retrain" in refused.stderr
    assert nestling_cli("retrain", str(tune), "--max_epochs", "2").returncode == 2


def _planned(tmp: Path, name: str) -> Path:
    """A tune without a test split, planned and written as `nestling tune` would, nothing trained: what the
    refusal reads (training it would only cost time)."""
    hp = tmp / "hp.toml"
    hp.write_text("[hyperparameters]\nvalue = [0.3, 0.7]\n")
    prepared = prepare(parse_config(["--task", "sleep", "--hpconfig", str(hp), "--sampler", "grid", "--n_trials", "2",
                                     "--n_folds", "2", "--n_seeds", "1", "--artifact_dir", str(tmp / "art"),
                                     "--name", name]), "tune")  # fmt: skip
    write_plan(prepared.plan, prepared.splits)
    return prepared.plan.root


def test_retrain_without_a_test_split_is_refused(tmp_path: Path) -> None:
    tune = _planned(tmp_path, "nt")
    proc = nestling_cli("retrain", str(tune))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--test_split random" in lines[0] and "no test split" in lines[0]
    assert not (tune / "nt-final").exists()


def test_tune_with_retrain_chains_it_on_the_local_pool(tmp_path: Path) -> None:
    tune = _tune(tmp_path, "ch", "--test_split", "random", "--retrain")
    final = tune / "ch-final"
    infos = pl.read_parquet(final / naming.FINAL_INFOS)
    assert infos["row"].to_list() == ["seed", "mean", "std", "sem"]  # the tune's one seed
    assert infos["test/Recall"].to_list()[:2] == pytest.approx([0.7, 0.7])
    # --retrain_epochs best (the default): the sleep task's constant val metric is best at epoch 0 -> 1 epoch
    assert json.loads((final / naming.PLAN).read_text())["options"]["training"]["max_epochs"] == 1
    # the tune's runs select on val: no test pass, no best.ckpt; the retrain tests (issue 21, per run vs the peer)
    runs = pl.read_parquet(tune / naming.RUN_INFOS)
    assert not [c for c in runs.columns if c.startswith("test/")] and not list(tune.rglob("best.ckpt"))
    # the retrain ran in the tune's worker, kept warm: no second torch import (issue 21, a fresh worker cost ~2 s)
    tuned = [json.loads(p.read_text()) for p in tune.glob("ch-cv*/*/run_result.json")]
    (retrained,) = [json.loads(p.read_text()) for p in final.glob("*/run_result.json")]
    assert len(tuned) == 4 and {r["pid"] for r in tuned} == {retrained["pid"]}
    assert retrained["worker_startup_s"] is None
    assert "run ch-final-run-f0s42 attempt 1" in (final / "_workers" / "worker-0.log").read_text()  # its own log
    assert "ch-final" not in (tune / "_workers" / "worker-0.log").read_text()
    page = (tune / naming.REPORT).read_text()  # written after the retrain, so it shows it (issue 21 #4)
    assert "Retrain: test metrics" in page and "for 1 epoch with 1 seed" in page


def test_tune_with_retrain_but_no_test_split_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    proc = nestling_cli(
        "tune", "--task", "sleep", "--hpconfig", str(tmp_path / "none.toml"), "--retrain",
        "--artifact_dir", str(tmp_path / "art"),
    )  # fmt: skip
    assert proc.returncode == 2 and "--retrain" in proc.stderr and "--test_split random" in proc.stderr
    assert not (tmp_path / "art").exists()


def test_resuming_a_finished_tune_with_retrain_retrains_it(tune: Path, tmp_path: Path) -> None:
    """The module's finished tune, copied without its retrain (the tree is relocatable): resumed with --retrain."""
    art = tmp_path / "art"
    shutil.copytree(tune, art / tune.name, ignore=shutil.ignore_patterns(f"{tune.name}-final"))
    proc = ok(nestling_cli("tune", "--resume", tune.name, "--artifact_dir", str(art), "--retrain"))
    assert "nothing to resume" in proc.stdout
    final = art / tune.name / f"{tune.name}-final" / naming.FINAL_INFOS
    assert pl.read_parquet(final)["row"].to_list() == ["seed", "mean", "std", "sem"]
