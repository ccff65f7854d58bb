"""p_best (issue 25 #2): the probability that each trial is the best, by a paired bootstrap over folds, seeded by
--tune_seed; it sums to 1 over complete, stable trials and is NaN for the others. The statistics on numbers, then
through a real plan and the real collector (run results written by hand so the scores are exact)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from nestling.core.ml.bootstrap import bootstrap_selection
from nestling.core.options.config import parse_config
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_json
from nestling.plan.preflight import prepare
from nestling.plan.store import write_plan
from nestling.read.collect import collect, ranked


def test_a_clear_winner_has_p_best_one_and_ties_share() -> None:
    clear = bootstrap_selection([[0.9, 0.91, 0.92, 0.9], [0.5, 0.52, 0.51, 0.5]], seed=0)
    assert clear.p_best == [1.0, 0.0]
    tied = bootstrap_selection([[0.5, 0.6, 0.7], [0.5, 0.6, 0.7]], seed=0)
    assert tied.p_best == [0.5, 0.5]
    assert tied.optimism == pytest.approx(0.0, abs=0.01) and clear.optimism == pytest.approx(0.0, abs=0.01)


def test_p_best_is_paired_over_folds_and_seeded() -> None:
    # trial 1 beats trial 0 by 0.01 on every fold, while the folds differ by 0.3: paired, trial 1 always wins
    easy_hard = [0.2, 0.5, 0.8, 0.3, 0.6]
    paired = bootstrap_selection([easy_hard, [v + 0.01 for v in easy_hard]], seed=3)
    assert paired.p_best == [0.0, 1.0]
    noisy = [[0.5, 0.7, 0.6, 0.4, 0.65], [0.6, 0.5, 0.62, 0.55, 0.6], [0.58, 0.61, 0.5, 0.6, 0.55]]
    a, b, c = (bootstrap_selection(noisy, seed=s) for s in (7, 7, 8))
    assert a == b and a.p_best != c.p_best  # the seed decides the resamples
    assert sum(a.p_best) == pytest.approx(1.0) and all(0 < p < 1 for p in a.p_best)
    assert a.optimism > 0  # the best of three noisy trials is optimistic


def _tune(tmp_path: Path, values: dict[int, list[float | None]], seed: int = 0) -> Path:
    """A sleep tune of len(values) trials x 4 folds x 1 seed; trial i's runs log values[i] (None: failed)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    hp = tmp_path / "hp.toml"
    hp.write_text(f"[hyperparameters]\nvalue = {[0.1 * (i + 1) for i in range(len(values))]}\n")
    config = parse_config(
        [
            "--task", "sleep", "--hpconfig", str(hp), "--sampler", "grid", "--n_trials", str(len(values)),
            "--n_folds", "4", "--n_seeds", "1", "--artifact_dir", str(tmp_path / "art"), "--name", "t",
            "--scoring_metric", "val/score", "--tune_seed", str(seed),
        ]
    )  # fmt: skip
    prepared = prepare(config, "tune")
    write_plan(prepared.plan, prepared.splits)
    for cv in prepared.plan.cvs:
        assert cv.hp_index is not None
        for run, value in zip(cv.runs, values[cv.hp_index], strict=True):
            run.dir.mkdir(parents=True)
            status = "failed" if value is None else "success"
            write_json(naming.RunPaths(run.dir).result,
                       {"status": status, "metrics": {} if value is None else {"val/score": value}})  # fmt: skip
    return prepared.plan.root


CLOSE = {0: [0.70, 0.60, 0.65, 0.62], 1: [0.64, 0.66, 0.61, 0.66], 2: [0.9, 0.9, None, 0.9],
         3: [0.3, 0.31, 0.29, 0.3]}  # fmt: skip  (2: best scores but a failed run: unstable, not racing)


def test_p_best_in_tune_infos_sums_to_one_over_complete_stable_trials(tmp_path: Path) -> None:
    root = _tune(tmp_path, CLOSE)
    collected = collect(root)
    infos = pl.read_parquet(root / naming.TUNE_INFOS).sort("hp_index")
    p = infos["p_best"].to_list()
    assert math.isnan(p[2])  # unstable: not in the race
    assert sum(p[i] for i in (0, 1, 3)) == pytest.approx(1.0)
    assert p[3] == 0.0 and 0.2 < p[0] < 0.8 and 0.2 < p[1] < 0.8  # two close leaders share it, the far one none
    assert collect(root).cvs[0].p_best == collected.cvs[0].p_best  # seeded by --tune_seed: the same every collect
    other = _tune(tmp_path / "seed5", CLOSE, seed=5)
    assert collect(other).cvs[0].p_best != collected.cvs[0].p_best


def test_the_summary_shows_p_best_and_says_when_the_choice_is_uncertain(tmp_path: Path) -> None:
    root = _tune(tmp_path, CLOSE)
    winner = ranked(collect(root).cvs)[0]
    cmd = [sys.executable, "-m", "nestling.cli", "collect", str(root)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "p_best" in out
    if winner.p_best < 0.5:
        assert f"the choice is uncertain: {winner.cv_name} is the best with probability {winner.p_best:.2f}" in out
        assert "--n_seeds" in out
    clear = _tune(tmp_path / "clear", {0: [0.9, 0.91, 0.92, 0.9], 1: [0.5, 0.5, 0.5, 0.51]})
    out = subprocess.run([*cmd[:-1], str(clear)], capture_output=True, text=True, check=True).stdout
    assert "the choice is uncertain" not in out and ranked(collect(clear).cvs)[0].p_best == 1.0
