"""Adaptive search (issue 13): draws from the tree, pruning over folds, the tables and resume, in-process.

Workers are simulated with the bowl task's known score (testing/bowl_workers.simulate_unit does what worker.run_dirs does,
writing the result a real run would write), so a tune of dozens of trials takes a second.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nestling.core.options.config import explicit_options, parse_config
from nestling.core.tree import naming
from nestling.execute.search import pruners, study, trials
from nestling.plan.store import load_plan
from nestling.plan.units import run_dirs_per_cv, work_units
from nestling.testing.bowl_workers import plan_bowl_tune, simulate_unit


def make_tune(tmp_path: Path, name: str, *extra: str, n_trials: int = 12, n_folds: int = 3) -> Path:
    return plan_bowl_tune(tmp_path, name, *extra, n_trials=n_trials, n_folds=n_folds)


def run_serial(root: Path) -> list[str]:
    plan = load_plan(root)
    return [s for unit in work_units(run_dirs_per_cv(plan), "serial") for s in simulate_unit(unit.run_dirs)]


def draws(root: Path) -> list[dict[str, object]]:
    plan = load_plan(root)
    paths = naming.TrialPaths(root)
    return [json.loads(paths.draw(i).read_text())["params"] for i in range(len(plan.cvs))]


def test_serial_tpe_with_a_fixed_seed_draws_the_same_configurations_twice(tmp_path: Path) -> None:
    first = make_tune(tmp_path, "a", "--sampler", "tpe", "--tune_seed", "7")
    run_serial(first)
    second = make_tune(tmp_path, "b", "--sampler", "tpe", "--tune_seed", "7")
    run_serial(second)
    other = make_tune(tmp_path, "c", "--sampler", "tpe", "--tune_seed", "8")
    run_serial(other)
    assert draws(first) == draws(second)
    assert draws(first) != draws(other)
    assert len({json.dumps(d, sort_keys=True) for d in draws(first)}) == 12  # continuous space: all distinct


def test_the_plan_of_an_adaptive_tune_holds_no_sampled_values_until_a_trial_starts(tmp_path: Path) -> None:
    root = make_tune(tmp_path, "t", "--sampler", "tpe", n_trials=3)
    plan = load_plan(root)
    assert plan.adaptive and set(plan.space or {}) == {"lr", "width", "depth"}
    assert all("lr" not in cv.hparams or cv.hparams["lr"] == 0.01 for cv in plan.cvs)  # only the task default
    assert not naming.TrialPaths(root).dir.exists()
    simulate_unit([str(plan.cvs[1].runs[0].dir)])
    spec = json.loads((plan.cvs[1].runs[0].dir / naming.RUN_SPEC).read_text())
    drawn = json.loads(naming.TrialPaths(root).draw(1).read_text())["params"]
    assert spec["trial"] == 1 and {k: spec["hparams"][k] for k in drawn} == drawn
    assert not naming.TrialPaths(root).draw(0).exists()  # trial 0 has not started: nothing drawn for it


def _draw_units(units: list[list[str]]) -> None:
    study._STUDIES.clear()
    for unit in units:
        simulate_unit(unit)


def test_eight_workers_drawing_at_once_draw_each_trial_once_and_never_the_same_configuration(
    tmp_path: Path,
) -> None:
    root = make_tune(tmp_path, "p", "--sampler", "tpe", n_trials=24, n_folds=2)
    plan = load_plan(root)
    per_cv = run_dirs_per_cv(plan)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:  # worker k takes cvs k, k+8, k+16: all eight draw their first trial at once
        pool.map(_draw_units, [per_cv[k::8] for k in range(8)])
    params = draws(root)
    assert len(params) == 24 and len({json.dumps(p, sort_keys=True) for p in params}) == 24
    assert sorted(p.name for p in naming.TrialPaths(root).dir.iterdir()) == sorted(f"{i}.json" for i in range(24))


def test_successive_halving_prunes_between_folds_and_the_tree_says_so(tmp_path: Path) -> None:
    from nestling.read.collect import collect, ranked
    from nestling.read.run_states import count, run_states

    root = make_tune(tmp_path, "h", "--sampler", "tpe", "--pruner", "successive-halving", n_trials=12, n_folds=4)
    statuses = run_serial(root)
    plan = load_plan(root)
    pruned = study.pruned_trials(root)
    assert pruned and statuses.count("pruned") > 0
    counts = count(run_states(plan))
    assert counts["pruned"] == statuses.count("pruned") and counts["lost"] == counts["pending"] == 0
    assert counts["success"] + counts["pruned"] == len(plan.runs)
    collected = collect(root)
    by_state = {cv.hp_index: cv.state for cv in collected.cvs}
    assert {i for i, s in by_state.items() if s == "pruned"} == pruned
    assert all(s == "complete" for i, s in by_state.items() if i not in pruned)
    for cv in collected.cvs:  # a pruned trial's table holds the runs that ran; its score is over those folds
        assert cv.n_runs == cv.n_folds_done and cv.n_missing == 0
        assert (cv.n_folds_done < 4) == (cv.hp_index in pruned)
    order = [cv.state for cv in ranked(collected.cvs)]
    assert order == sorted(order, key=lambda s: s == "pruned")  # every complete trial before every pruned one
    import polars as pl

    table = pl.read_parquet(root / naming.TUNE_INFOS)
    assert sorted(table["drawn_at"].to_list()) == list(range(12))
    assert set(table["state"].to_list()) == {"complete", "pruned"}
    runs = pl.read_parquet(root / naming.RUN_INFOS)
    assert runs.height == counts["success"] and "missing" not in runs["status"].to_list()


def test_the_intermediate_score_is_the_cv_score_over_the_folds_done(tmp_path: Path) -> None:
    from nestling.core.ml.scoring import cv_score

    root = make_tune(tmp_path, "i", "--sampler", "random", "--pruner", "median", n_trials=2, n_folds=3)
    run_serial(root)
    s = study.Study(load_plan(root))
    trial = s.trial(0)
    runs = load_plan(root).cvs[0].runs
    scores = [json.loads((r.dir / naming.RUN_RESULT).read_text())["metrics"]["val/score"] for r in runs]
    for k in (1, 2, 3):
        assert trial.values[k] == pytest.approx(cv_score([(v, False, "success") for v in scores[:k]])[0])
    assert trial.state is trials.TrialState.COMPLETE and trial.score == pytest.approx(sum(scores) / 3)


def test_halving_keeps_the_best_quarter_at_each_rung() -> None:
    assert not pruners.halving_prunes(0.5, 2, [0.9, 0.8])  # step 2 is no rung (rungs at 1, 4, 16)
    others = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert not pruners.halving_prunes(0.9, 1, others)  # best of 8: kept (top 2)
    assert not pruners.halving_prunes(0.65, 1, others)  # second of 8: kept
    assert pruners.halving_prunes(0.55, 1, others)  # third of 8: stopped
    assert not pruners.halving_prunes(0.1, 1, [])  # the first trial at a rung always goes on
    assert pruners.halving_prunes(0.1, 4, [0.2])  # fewer than 4 at the rung: only the best goes on
    assert not pruners.halving_prunes(0.3, 4, [0.2, 0.1])
    assert pruners.halving_prunes(math.nan, 1, [0.2])


def test_median_waits_for_three_complete_trials_then_stops_those_below_the_median() -> None:
    def trial(*values: float, state: trials.TrialState = trials.TrialState.COMPLETE) -> trials.Trial:
        return trials.Trial(0, {}, 0.0, state, {k + 1: v for k, v in enumerate(values)}, len(values))

    assert pruners.MEDIAN_STARTUP_TRIALS == 3
    done = [trial(v, v) for v in (0.1, 0.2)]
    assert not pruners.median_prunes(trial(0.0), 1, done)  # two complete: too early
    done.append(trial(0.3, 0.3))
    assert pruners.median_prunes(trial(0.15, state=trials.TrialState.RUNNING), 1, done)  # median 0.2
    assert not pruners.median_prunes(trial(0.25, state=trials.TrialState.RUNNING), 1, done)


def test_resume_keeps_drawn_and_pruned_trials_reruns_lost_ones_and_draws_the_rest(tmp_path: Path) -> None:
    import shutil

    from nestling.commands.resume import prepare_resume

    root = make_tune(tmp_path, "r", "--sampler", "tpe", "--pruner", "successive-halving", n_trials=10, n_folds=3)
    run_serial(root)
    plan = load_plan(root)
    before = draws(root)
    pruned = study.pruned_trials(root)
    complete = [i for i in range(10) if i not in pruned]
    lost = complete[-1]
    (plan.cvs[lost].runs[-1].dir / naming.RUN_RESULT).unlink()  # its worker was killed in the last run
    for i in (8, 9):  # never drawn: the tune was stopped before these started
        if i in pruned:
            naming.TrialPaths(root).pruned(i).unlink()
        naming.TrialPaths(root).draw(i).unlink()
        shutil.rmtree(plan.cvs[i].dir)
    naming.TrialPaths(root).draw(7).write_text("")  # a claim whose drawer died before writing
    if 7 in pruned:
        naming.TrialPaths(root).pruned(7).unlink()
    shutil.rmtree(plan.cvs[7].dir)
    argv = ["--resume", "r", "--artifact_dir", str(tmp_path / "art")]
    resumed = prepare_resume("tune", parse_config(argv, prog="nestling tune"), explicit_options(argv))
    redo = {Path(d).parent.name for dirs in resumed.run_dirs for d in dirs}
    assert redo == {f"r-cv{i}" for i in (lost, 7, 8, 9)}
    study._STUDIES.clear()
    for unit in work_units(resumed.run_dirs, "serial"):
        simulate_unit(unit.run_dirs)
    after = draws(root)
    assert after[: 7] == before[: 7]  # kept, the lost trial's configuration included
    s = study.Study(load_plan(root))
    assert all(s.trial(i).state in (trials.TrialState.COMPLETE, trials.TrialState.PRUNED) for i in range(10))
    assert len({json.dumps(p, sort_keys=True) for p in after}) == 10


def test_cv_parallel_with_a_pruner_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from nestling.core.errors import UsageError

    with pytest.raises(UsageError, match="--pruner median needs the folds of a trial to run in order"):
        make_tune(tmp_path, "x", "--sampler", "tpe", "--pruner", "median", "--strategy", "cv-parallel")
    assert not (tmp_path / "art" / "x").exists()


def test_tpe_with_cv_parallel_draws_once_for_the_runs_of_a_trial(tmp_path: Path) -> None:
    """Without a pruner cv-parallel is fine: the runs of one trial start side by side, one draws, the rest wait."""
    root = make_tune(tmp_path, "cp", "--sampler", "tpe", "--strategy", "cv-parallel", n_trials=2, n_folds=4)
    runs = [[d] for dirs in run_dirs_per_cv(load_plan(root)) for d in dirs]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        pool.map(_draw_units, [runs[k::4] for k in range(4)])
    drawn = draws(root)
    for cv in load_plan(root).cvs:
        specs = [json.loads((r.dir / naming.RUN_SPEC).read_text()) for r in cv.runs]
        assert all({k: s["hparams"][k] for k in drawn[cv.hp_index or 0]} == drawn[cv.hp_index or 0] for s in specs)


def test_a_claim_whose_drawer_died_is_taken_over_and_a_live_ones_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tune(tmp_path, "s", "--sampler", "tpe", n_trials=2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    paths = naming.TrialPaths(root)
    paths.dir.mkdir()
    paths.draw(0).write_text(json.dumps({"claimed_by": {"pid": dead.pid, "hostname": socket.gethostname()}}))
    s = study.Study(load_plan(root))
    # taken over because its drawer is dead, not because the claim went stale: a waiting loop fails fast here
    monkeypatch.setattr(study, "CLAIM_STALE_S", 1e9)
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) > 50:
            raise AssertionError("still waiting for a drawer that died")

    monkeypatch.setattr(study.time, "sleep", pause)
    params = s.ensure_drawn(0)
    assert set(params) == {"lr", "width", "depth"}
    assert json.loads(paths.draw(0).read_text())["params"] == params
    live = {"claimed_by": {"pid": os.getpid(), "hostname": socket.gethostname()}}
    paths.draw(1).write_text(json.dumps(live))
    study._take_over_if_abandoned(paths.draw(1))
    assert json.loads(paths.draw(1).read_text()) == live  # its drawer lives: left alone


def test_trial_states_are_the_strings_of_the_tree() -> None:
    """Draw files and tune_infos.parquet's `state` column hold these strings; finished trials never change."""
    assert [s.value for s in trials.TrialState] == ["complete", "pruned", "failed", "paused", "running", "waiting"]
    assert [s for s in trials.TrialState if s.is_finished()] == [
        trials.TrialState.COMPLETE, trials.TrialState.PRUNED, trials.TrialState.FAILED
    ]
    assert json.dumps({"state": trials.TrialState.PRUNED}) == '{"state": "pruned"}'


def test_tpe_start_up_scales_with_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21 #15: Optuna's 10 random start-up trials made a 12-trial TPE tune 10 random draws and 2 TPE ones; now
    a quarter of the budget (at least 1, at most 10) is random, and the 4th trial of 12 is TPE's."""
    assert [study.tpe_startup_trials(n) for n in (1, 4, 12, 39, 40, 1000)] == [1, 1, 3, 9, 10, 10]
    root = make_tune(tmp_path, "s", "--sampler", "tpe", "--tune_seed", "5", n_trials=12)
    per_cv = run_dirs_per_cv(load_plan(root))
    for cv in per_cv[:3]:  # three complete trials
        simulate_unit(cv)
    tpe = study.Study(load_plan(root)).ask(3)
    monkeypatch.setattr(study, "tpe_startup_trials", lambda n: 10)
    random_start = study.Study(load_plan(root)).ask(3)
    assert tpe != random_start  # the scaled start-up made trial 3 a TPE draw
    monkeypatch.setattr(study, "tpe_startup_trials", lambda n: 4)
    assert study.Study(load_plan(root)).ask(3) == random_start  # a 4th random draw is what Optuna's default gave
