"""Pruning between epochs (issue 22): the rung rules, and the protocol on the tree driven by the worker's own loop
with simulated training (testing/bowl_workers.py: the bowl task's known learning curves, every epoch counted)."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import optuna
import polars as pl
import pytest

from nestling.commands.resume import prepare_resume
from nestling.core.errors import UsageError
from nestling.core.options.config import explicit_options, parse_config
from nestling.core.tree import failfast, naming
from nestling.core.tree.run_epochs import StopReason, read_curve, record_epoch, run_epochs
from nestling.core.tree.run_result import RunResult, read_result
from nestling.core.tree.run_spec import RunSpec
from nestling.core.tree.run_state import RunState
from nestling.execute import worker
from nestling.execute.search import pruners, rungs, study
from nestling.plan.store import load_plan, load_spec
from nestling.plan.units import run_dirs_per_cv, work_units
from nestling.read.collect import collect, ranked
from nestling.read.progress import RunProgress
from nestling.read.run_states import run_states
from nestling.testing import bowl_workers


def make_tune(tmp_path: Path, name: str, *extra: str, n_trials: int = 12, n_folds: int = 2) -> Path:
    """A bowl tune of up to 9 epochs per run, as a fresh process sees it; no epoch counted yet."""
    bowl_workers.EPOCHS_TRAINED.clear()
    return bowl_workers.plan_bowl_tune(tmp_path, name, "--max_epochs", "9", *extra, n_trials=n_trials, n_folds=n_folds)


def decided(root: Path) -> rungs.Board:
    """The tune's board, checked: every trial pruned or finished (none left paused), no epoch trained twice."""
    board = rungs.Board.from_root(root)
    assert board is not None
    assert all(t.pruned or board.finished(t.index) for t in board.trials())
    assert max(trained_in(root).values()) == 1
    return board


def run_serial(root: Path, finish: bool = True) -> list[str]:
    plan = load_plan(root)
    statuses = [s for unit in work_units(run_dirs_per_cv(plan), "serial") for s in bowl_workers.simulate_unit(unit.run_dirs)]
    return statuses + (bowl_workers.finish() if finish else [])


def trained_in(root: Path) -> Counter[tuple[str, int]]:
    return Counter({k: v for k, v in bowl_workers.EPOCHS_TRAINED.items() if k[0].startswith(str(root))})


# -- the rules ---------------------------------------------------------------------------------------------------


def test_rungs_are_min_epochs_times_eta_powers_below_max_epochs_then_max_epochs() -> None:
    assert pruners.rung_epochs(1, 3, 27) == (1, 3, 9, 27)
    assert pruners.rung_epochs(1, 3, 10) == (1, 3, 9, 10)
    assert pruners.rung_epochs(2, 2, 16) == (2, 4, 8, 16)
    assert pruners.rung_epochs(1, 3, 27, bracket=2) == (9, 27)
    assert pruners.rung_epochs(1, 3, 27, bracket=3) == (27,)  # Hyperband's last bracket: no pruning
    assert pruners.rung_epochs(5, 3, 5) == (5,)


@pytest.mark.parametrize(("min_epochs", "eta", "max_epochs"), [(1, 3, 27), (1, 3, 81), (1, 3, 10), (2, 2, 100), (1, 4, 9)])
def test_brackets_and_their_shares_are_optunas(min_epochs: int, eta: int, max_epochs: int) -> None:
    """Hyperband's bracket count and trial allocation are those of Optuna's HyperbandPruner, read from it."""
    optuna_pruner = optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=max_epochs, reduction_factor=eta)
    optuna_pruner._try_initialization(optuna.create_study())
    brackets = pruners.n_brackets(min_epochs, eta, max_epochs)
    assert brackets == optuna_pruner._n_brackets
    assert pruners.bracket_shares(brackets, eta) == optuna_pruner._trial_allocation_budgets


def test_the_bracket_sequence_interleaves_the_shares_from_the_first_trials() -> None:
    shares = pruners.bracket_shares(4, 3)  # 27, 12, 6, 4
    sequence = pruners.bracket_sequence(49, 4, 3)
    assert [sequence.count(b) for b in range(4)] == shares
    assert set(sequence[:8]) == {0, 1, 2, 3}  # a short tune already covers every bracket
    assert pruners.bracket_sequence(49, 4, 3) == sequence  # deterministic: resumed or distributed alike


def test_promotion_takes_the_best_floor_n_over_eta_and_the_best_one_once_no_other_can_come() -> None:
    values = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    assert pruners.promotes(0.8, values, n_possible=10, eta=3)  # 2nd of 6: top 2
    assert not pruners.promotes(0.7, values, n_possible=10, eta=3)
    assert not pruners.promotes(0.9, [0.9, 0.1], n_possible=5, eta=3)  # 2 at the rung, 3 more may come: wait
    assert pruners.promotes(0.9, [0.9, 0.1], n_possible=2, eta=3)  # nobody else can come: the best goes on
    assert not pruners.promotes(math.nan, [math.nan, 0.1, 0.2], n_possible=3, eta=3)


def test_a_trial_is_pruned_as_soon_as_it_can_never_be_promoted() -> None:
    # 6 at the rung, at most 9 ever: at most 3 go on; the 4th of 6 can never be among them
    assert pruners.never_promotes(0.6, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], n_possible=9, eta=3)
    assert not pruners.never_promotes(0.7, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], n_possible=9, eta=3)
    assert not pruners.never_promotes(0.1, [0.1], n_possible=20, eta=3)  # 19 more may come: 6 may go on
    assert pruners.never_promotes(0.1, [0.9, 0.1], n_possible=2, eta=3)
    assert pruners.never_promotes(math.nan, [math.nan, 0.5], n_possible=2, eta=3)


def test_run_epochs_reads_how_far_a_result_trained() -> None:
    assert run_epochs(None) == run_epochs(None) and not run_epochs(None).final
    paused = run_epochs(RunResult.from_json({"status": "success", "epochs_trained": 3, "stop_reason": "paused"}))
    assert paused.paused and not paused.final and paused.epochs_trained == 3
    assert run_epochs(RunResult.from_json({"status": "success", "epochs_trained": 9, "stop_reason": "completed"})).final
    assert run_epochs(RunResult.from_json({"status": "failed"})).final
    old = run_epochs(RunResult.from_json({"status": "success"}))  # written before runs recorded epochs: complete
    assert old.final and old.stop_reason == StopReason.COMPLETED


def test_the_curve_keeps_each_epoch_once_when_an_attempt_retrains_past_a_checkpoint(tmp_path: Path) -> None:
    curve: list[dict[str, float]] = []
    for epoch in range(4):
        curve = record_epoch(tmp_path, epoch, {"val/score": epoch / 10}, curve)
    curve = record_epoch(tmp_path, 2, {"val/score": 0.25, "bad": math.nan}, read_curve(tmp_path))  # resumed at 2
    assert read_curve(tmp_path) == curve == [{"epoch": 0, "val/score": 0.0}, {"epoch": 1, "val/score": 0.1},
                                             {"epoch": 2, "val/score": 0.25}]  # fmt: skip


def test_the_progress_bar_counts_each_run_once_with_its_latest_status() -> None:
    progress = RunProgress(2, "t", quiet=True)
    progress.run_done("a", RunState.PAUSED)
    progress.run_done("b", RunState.PAUSED)
    progress.run_done("a", RunState.SUCCESS)
    progress.run_done("b", RunState.PRUNED)
    assert dict(progress.counts) == {RunState.SUCCESS: 1, RunState.PRUNED: 1}


# -- the refusals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--min_epochs", "12"), "--min_epochs 12 is larger than --max_epochs 9"),
        (("--reduction_factor", "1"), "--reduction_factor 1 must be at least 2"),
        (("--min_epochs", "0"), "--min_epochs 0 must be at least 1"),
    ],
)
def test_bad_rungs_are_refused_before_anything_is_written(tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        make_tune(tmp_path, "bad", "--pruner", "asha", *extra)
    assert not (tmp_path / "art").exists()


# -- the protocol, through the worker's loop -----------------------------------------------------------------------


def test_serial_asha_decides_every_trial_and_never_trains_an_epoch_twice(tmp_path: Path) -> None:
    root = make_tune(tmp_path, "a", "--pruner", "asha", n_trials=12)
    run_serial(root)
    counts = trained_in(root)
    board = decided(root)
    trials = board.trials()
    # rungs at 1, 3, 9 epochs; at the end the best floor(n / 3) of every rung went on (ASHA's end state; a
    # trial promoted early, while few had reached the rung, may go on too)
    reached = [[t for t in trials if r in t.values] for r in range(3)]
    assert len(reached[0]) == 12 and 4 <= len(reached[1]) < 12 and 1 <= len(reached[2]) < len(reached[1])
    for rung in (0, 1):
        best = sorted(reached[rung], key=lambda t: -t.values[rung])[: max(1, len(reached[rung]) // 3)]
        assert all(t.decisions[rung] == rungs.RungDecision.PROMOTE for t in best)
        assert {t.index for t in reached[rung + 1]} == {t.index for t in reached[rung]
                                                         if t.decisions[rung] == rungs.RungDecision.PROMOTE}  # fmt: skip
    complete = [t for t in trials if not t.pruned]
    assert complete == reached[2] and all(t.complete for t in complete)
    # the epochs each run trained, counted by the simulated worker, are those its result says
    for t in trials:
        for d in board.trial_runs[t.index]:
            epochs = run_epochs(read_result(d)).epochs_trained
            assert sorted(e for (run, e) in counts if run == d) == list(range(epochs))
            assert epochs == t.epochs(t.top)
    n0, n1, n2 = (len(r) for r in reached)
    assert sum(counts.values()) == n0 * 2 * 1 + n1 * 2 * 2 + n2 * 2 * 6 <= 12 * 2 * 9 / 2
    for t in trials:  # a decision for every rung a trial left or stopped at
        assert all(rung in t.decisions for rung in t.values if rung < len(t.rungs) - 1)
        assert t.pruned == (t.decisions.get(t.top) == rungs.RungDecision.PRUNE)


def test_the_tables_say_how_far_each_run_and_trial_trained(tmp_path: Path) -> None:

    root = make_tune(tmp_path, "t", "--pruner", "asha", n_trials=9)
    run_serial(root)
    collected = collect(root)
    runs = pl.read_parquet(root / naming.RUN_INFOS)
    tune = pl.read_parquet(root / naming.TUNE_INFOS).sort("hp_index")
    assert set(runs["stop_reason"].to_list()) == {"pruned", "completed"}
    assert runs.filter(pl.col("stop_reason") == "completed")["epochs_trained"].to_list() == [9, 9]
    per_trial = runs.group_by("cv_name").agg(pl.col("epochs_trained").sum()).sort("cv_name")
    assert dict(per_trial.iter_rows()) == dict(zip(tune["cv_name"], tune["n_epochs_done"], strict=True))
    board = rungs.Board.from_root(root)
    assert board is not None
    assert tune["rung"].to_list() == [t.top for t in board.trials()]
    assert tune["bracket"].to_list() == [0] * 9
    assert sorted(tune["state"].to_list()) == ["complete"] + ["pruned"] * 8
    best = ranked(collected.cvs)[0]
    assert best.state == "complete" and best.n_epochs_done == 18


def test_hyperband_runs_each_bracket_as_its_own_asha(tmp_path: Path) -> None:
    root = make_tune(tmp_path, "h", "--pruner", "hyperband", n_trials=16)  # brackets: rungs (1,3,9) (3,9) (9,)
    run_serial(root)
    board = rungs.Board.from_root(root)
    assert board is not None and board.ladder.brackets == 3
    trials = board.trials()
    assert [t.bracket for t in trials] == pruners.bracket_sequence(16, 3, 3)
    assert max(trained_in(root).values()) == 1
    for bracket in range(3):
        members = [t for t in trials if t.bracket == bracket]
        assert members and any(t.complete for t in members)  # every bracket completes a trial
        assert all(t.rungs == pruners.rung_epochs(1, 3, 9, bracket) for t in members)
    for t in (t for t in trials if t.bracket == 2):  # the last bracket trains every trial to the end, unpruned
        assert t.complete and not t.pruned and t.top == 0


def test_a_promotion_a_killed_worker_left_is_trained_by_the_next_free_worker_once(tmp_path: Path) -> None:
    """A decision is data: the worker that promoted a trial dies before training it (simulated: it writes nothing,
    its process is gone); the fresh worker the pool starts for the next unit finds the promotion in the tree and
    trains each of its epochs once."""

    root = make_tune(tmp_path, "k", "--pruner", "asha", n_trials=6)
    units = work_units(run_dirs_per_cv(load_plan(root)), "tune-parallel")
    left: list[str] = []

    class Killed(Exception):
        pass

    def dies_at_its_first_promotion(spec, until_epoch=None):  # type: ignore[no-untyped-def]
        if (until_epoch or 0) > 1:
            left.append(spec.run_dir)
            raise Killed
        return bowl_workers.simulate_training(spec, until_epoch)

    remaining = list(units)
    with pytest.raises(Killed):
        while remaining:
            worker.run_dirs(remaining[0].run_dirs, trainer=dies_at_its_first_promotion)
            remaining.pop(0)
    remaining.pop(0)  # that unit's runs had all ended: the promotion came after them
    assert left and not run_epochs(read_result(left[0])).epochs_trained > 1
    rungs._BOARDS.clear()  # a fresh worker process
    for unit in remaining:
        bowl_workers.simulate_unit(unit.run_dirs)
    bowl_workers.finish()
    decided(root)
    assert run_epochs(read_result(left[0])).epochs_trained > 1  # the left promotion was trained


def test_the_first_decision_stands_when_two_workers_decide_at_once(tmp_path: Path) -> None:
    root = make_tune(tmp_path, "c", "--pruner", "asha", n_trials=3)
    board = rungs.Board.from_root(root)
    assert board is not None
    trial = board.trial(0)
    board.paths.dir.mkdir(parents=True)
    assert board._decide(trial, 0, rungs.RungDecision.PROMOTE) == rungs.RungDecision.PROMOTE
    other = rungs.Board.from_root(root)
    assert other is not None
    assert other._decide(other.trial(0), 0, rungs.RungDecision.PRUNE) == rungs.RungDecision.PROMOTE
    assert not board.paths.pruned(0).exists()
    assert json.loads(board.paths.decision(0, 0).read_text())["decision"] == "promote"


def test_tpe_sees_each_trial_by_its_values_at_the_rungs(tmp_path: Path) -> None:
    root = make_tune(tmp_path, "p", "--sampler", "tpe", "--pruner", "asha", n_trials=9)
    run_serial(root)
    s = study.Study.from_root(root)
    assert s is not None
    board = rungs.Board.from_root(root)
    assert board is not None
    for t in board.trials():
        frozen = s._frozen_trial(t.index)
        assert frozen is not None
        assert frozen.intermediate_values == {t.epochs(k): v for k, v in t.values.items()}
        assert frozen.state == (optuna.trial.TrialState.PRUNED if t.pruned else optuna.trial.TrialState.COMPLETE)
    assert len({json.dumps(t.params, sort_keys=True) for t in s.trials()}) == 9


def test_resume_hands_paused_trials_back_and_keeps_their_results(tmp_path: Path) -> None:
    """Interrupted after every trial reached its first rung, before any promotion: the paused runs go back to the
    workers with their results kept (not archived as failures); their rungs are then decided and trained."""
    root = make_tune(tmp_path, "r", "--pruner", "asha", n_trials=6)
    plan = load_plan(root)
    for unit in work_units(run_dirs_per_cv(plan), "tune-parallel"):  # each trial to its first rung, no promotion
        for d in unit.run_dirs:
            bowl_workers.simulate_training(drawn_spec(d), 1)
    states = _run_states(root)
    assert set(states) == {"paused"}
    argv = ["--resume", "r", "--artifact_dir", str(tmp_path / "art")]
    resumption = prepare_resume("tune", parse_config(argv, prog="nestling tune"), explicit_options(argv))
    assert sorted(d for cv in resumption.run_dirs for d in cv) == sorted(str(r.dir) for r in plan.runs)
    assert all(run_epochs(read_result(r.dir)).paused for r in plan.runs)  # kept, not archived
    rungs._BOARDS.clear()
    for cv in resumption.run_dirs:
        worker.run_dirs(cv, trainer=bowl_workers.simulate_training)
    bowl_workers.finish()
    assert set(_run_states(root)) == {"success", "pruned"}
    assert max(trained_in(root).values()) == 1


def drawn_spec(run_dir: str) -> RunSpec:
    """The run's spec as a worker loads it, its trial drawn first."""

    study.before_run(Path(run_dir), root_of(run_dir))  # the trial's draw, as a worker makes it
    return load_spec(Path(run_dir))


def root_of(run_dir: str) -> Path:

    root = failfast.plan_root(Path(run_dir))
    assert root is not None
    return root


def _run_states(root: Path) -> list[str]:

    return [s.state for s in run_states(load_plan(root))]


def test_cv_parallel_units_of_single_runs_still_compare_whole_trials(tmp_path: Path) -> None:
    """With --strategy cv-parallel every run is its own unit: a trial's rung is written by whichever unit ends its
    last run, and promotions are taken the same way."""
    root = make_tune(tmp_path, "v", "--pruner", "asha", "--strategy", "cv-parallel", n_trials=6, n_folds=3)
    plan = load_plan(root)
    units = work_units(run_dirs_per_cv(plan), "cv-parallel")
    assert {len(u.run_dirs) for u in units} == {1}
    for unit in units:
        bowl_workers.simulate_unit(unit.run_dirs)
    bowl_workers.finish()
    board = decided(root)
    assert [t.n_epochs[0] for t in board.trials()] == [3] * 6  # every fold reached the rung before the comparison


def test_a_scandir_sees_decisions_and_rungs_but_not_draws_as_rungs(tmp_path: Path) -> None:
    root = make_tune(tmp_path, "s", "--sampler", "tpe", "--pruner", "asha", n_trials=3)
    run_serial(root)
    names = os.listdir(naming.TrialPaths(root).dir)
    assert {n for n in names if n.endswith(".json")} == {"0.json", "1.json", "2.json"}  # rung files are no draws
    study.forget_unwritten_draws(root)  # resume's clean-up keeps every rung file and decision
    assert sorted(os.listdir(naming.TrialPaths(root).dir)) == sorted(names)


def test_resume_refuses_a_new_max_epochs_for_a_tune_with_rungs(tmp_path: Path) -> None:
    make_tune(tmp_path, "m", "--pruner", "hyperband", n_trials=3)
    argv = ["--resume", "m", "--artifact_dir", str(tmp_path / "art"), "--max_epochs", "27", "--force"]
    with pytest.raises(UsageError, match="--max_epochs cannot change on resume"):
        prepare_resume("tune", parse_config(argv, prog="nestling tune"), explicit_options(argv))
