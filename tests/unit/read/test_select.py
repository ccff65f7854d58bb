"""Choosing with the variance in mind (issue 14 §1): tune_infos.parquet has the mean, std, sem and lcb of each
trial's run scores, and `--select lcb` ranks by lcb = mean - sem. A real plan and the real collector; the run
results are written by hand so the scores are exact."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from nestling.core.ml.scoring import cv_spread
from nestling.core.options.config import parse_config
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_json
from nestling.plan.preflight import prepare
from nestling.plan.store import write_plan
from nestling.read.collect import collect, ranked


def _tune(tmp_path: Path, values: dict[int, list[float]], extra: list[str] | None = None) -> Path:
    """A sleep tune of len(values) trials x 2 folds x 2 seeds; trial i's runs log values[i] (None: failed)."""
    hp = tmp_path / "hp.toml"
    hp.write_text(f"[hyperparameters]\nvalue = {[0.1 * (i + 1) for i in range(len(values))]}\n")
    config = parse_config(
        [
            "--task", "sleep", "--hpconfig", str(hp), "--sampler", "grid", "--n_trials", str(len(values)),
            "--n_folds", "2", "--n_seeds", "2", "--artifact_dir", str(tmp_path / "art"), "--name", "t",
            "--scoring_metric", "val/score", *(extra or []),
        ]
    )  # fmt: skip
    prepared = prepare(config, "tune")
    write_plan(prepared.plan, prepared.splits)
    for cv in prepared.plan.cvs:
        assert cv.hp_index is not None
        for run, value in zip(cv.runs, values[cv.hp_index], strict=True):
            run.dir.mkdir(parents=True)
            status = "failed" if value is None else "success"
            write_json(
                naming.RunPaths(run.dir).result,
                {"status": status, "metrics": {} if value is None else {"val/score": value}},
            )
    return prepared.plan.root


def test_spread_of_a_cv_over_its_usable_runs() -> None:
    spread = cv_spread([(1.0, False, "success"), (3.0, False, "success"), (9.0, True, "success"),
                        (9.0, False, "failed")])  # fmt: skip
    assert (spread.mean, spread.std, spread.sem) == (2.0, math.sqrt(2.0), 1.0)
    assert math.isnan(spread.sem_corrected) and math.isnan(spread.lcb)  # fold sizes unknown: no corrected sem
    runs = [(1.0, False, "success"), (3.0, False, "success"), (9.0, True, "success"), (9.0, False, "failed")]
    corrected = cv_spread(runs, [0.2, 0.3, 5.0, 5.0])  # the ratios of the two usable runs' folds only: mean 0.25
    assert corrected.sem == 1.0 and corrected.sem_corrected == pytest.approx(math.sqrt(2.0) * math.sqrt(0.5 + 0.25))
    assert corrected.lcb == pytest.approx(2.0 - math.sqrt(2.0 * 0.75))
    one = cv_spread([(4.0, False, "success")])
    assert one.mean == 4.0 and math.isnan(one.std) and math.isnan(one.sem) and math.isnan(one.lcb)
    assert math.isnan(cv_spread([]).mean)


# One higher-is-better metric: a run's score is its value. Trial 0: scores 4, 4, 4, 4 (mean 4, sem 0). Trial 1:
# scores 10, 10, 2, 2 (mean 6, std sqrt(64/3), sem sqrt(64/3)/2 = 2.309, lcb 3.691). Trial 2: one failed run,
# scores 5, 5, 5.
LOSSES = {0: [4.0] * 4, 1: [10.0, 10.0, 2.0, 2.0], 2: [5.0, 5.0, None, 5.0]}


def test_tune_infos_has_mean_std_sem_lcb(tmp_path: Path) -> None:
    root = _tune(tmp_path, LOSSES)
    collect(root)
    infos = pl.read_parquet(root / naming.TUNE_INFOS).sort("hp_index")
    assert infos["run_score_mean"].to_list() == pytest.approx([4.0, 6.0, 5.0])
    assert infos["run_score_mean"].to_list() == infos["score"].to_list()
    std1 = math.sqrt(((10 - 6) ** 2 * 2 + (2 - 6) ** 2 * 2) / 3)
    assert infos["run_score_std"].to_list() == pytest.approx([0.0, std1, 0.0])
    assert infos["run_score_sem"].to_list() == pytest.approx([0.0, std1 / 2, 0.0])
    assert infos["score_is_unstable"].to_list() == [False, False, True]


def test_lcb_is_the_nadeau_bengio_corrected_bound_from_run_infos_and_splits(tmp_path: Path) -> None:
    """Done-when of issue 25: lcb = mean - std * sqrt(1/J + n_val/n_train), recomputed here from the tune's
    run_infos.parquet and splits.json (the folds' sizes), not from the code under test."""
    root = _tune(tmp_path, LOSSES)
    collect(root)
    infos = pl.read_parquet(root / naming.TUNE_INFOS).sort("hp_index")
    runs = pl.read_parquet(root / naming.RUN_INFOS)
    splits = json.loads((root / naming.SPLITS).read_text())
    ratio = [len(s["val"]) / len(s["train"]) for s in splits]
    assert len(ratio) == 2 and all(0 < r < 10 for r in ratio)
    for row in infos.iter_rows(named=True):
        usable = runs.filter((pl.col("cv_name") == row["cv_name"]) & (pl.col("status") == "success")
                             & ~pl.col("is_unstable"))  # fmt: skip
        scores, folds = usable["run_score"].to_list(), usable["fold"].to_list()
        j = len(scores)
        mean = sum(scores) / j
        std = math.sqrt(sum((x - mean) ** 2 for x in scores) / (j - 1))
        mean_ratio = sum(ratio[f] for f in folds) / j
        corrected = std * math.sqrt(1 / j + mean_ratio)
        assert row["run_score_sem_corrected"] == pytest.approx(corrected, abs=1e-12)
        assert row["lcb"] == pytest.approx(mean - corrected, abs=1e-12)
        assert row["run_score_sem"] == pytest.approx(std / math.sqrt(j), abs=1e-12)  # the naive one, kept beside
    assert infos["run_score_sem_corrected"][1] > infos["run_score_sem"][1]  # the correction widens the interval


def test_select_ranks_by_score_or_lcb(tmp_path: Path) -> None:
    root = _tune(tmp_path, LOSSES)
    cvs = collect(root).cvs
    # stable trials first whatever the ranking: the unstable trial 2 (score 5) stays last
    assert [c.hp_index for c in ranked(cvs)] == [1, 0, 2]
    assert [c.hp_index for c in ranked(cvs, "lcb")] == [0, 1, 2]


def test_lcb_without_spread_ranks_after_the_others_by_score(tmp_path: Path) -> None:
    # trial 0: one usable run (score 2; lcb NaN); trial 1: scores 1, 1 (lcb 1); trial 2: one usable run, score 5
    root = _tune(tmp_path, {0: [2.0, None, None, None], 1: [1.0, 1.0, None, None], 2: [5.0, None, None, None]})
    cvs = collect(root).cvs
    assert [c.hp_index for c in ranked(cvs)] == [2, 0, 1]  # all unstable (failed runs): by score
    assert [c.hp_index for c in ranked(cvs, "lcb")] == [1, 2, 0]


def test_the_tune_remembers_select_and_collect_can_override(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = _tune(tmp_path, LOSSES, ["--select", "lcb"])
    cmd = [sys.executable, "-m", "nestling.cli", "collect", str(root)]
    by_plan = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "ranked by lcb" in by_plan and "best (lcb): t-cv0 " in by_plan
    by_flag = subprocess.run([*cmd, "--select", "score"], capture_output=True, text=True, check=True).stdout
    assert "ranked by score" in by_flag and "best (score): t-cv1 " in by_flag
    # 2 folds of 20 train and 20 val samples: corrected sem = sqrt(64/3) * sqrt(1/4 + 1) = 5.16, to two digits
    assert "best (score): t-cv1 score 6 ± 5.2 (corrected sem), lcb 0.836;" in by_flag
