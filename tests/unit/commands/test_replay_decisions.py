"""`nestling replay TUNE_DIR --pruner P` (issue 25 #4): for a serial tune drawn up front (random sampler) the replay
of an unpruned tune decides exactly what a real tune with the same seed and pruner decides. The tunes here run
through the real study with bowl workers simulated in-process (testing/bowl_workers: what a worker does with a
unit, the run's result written instead of trained); tests/e2e/test_replay.py does the same with real workers."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from nestling.commands.replay import ReplayState, replay_tune
from nestling.core.errors import UsageError
from nestling.core.tree import naming
from nestling.execute.search import study
from nestling.plan.store import load_plan
from nestling.plan.units import run_dirs_per_cv, work_units
from nestling.read.collect import collect
from nestling.testing.bowl_workers import plan_bowl_tune, simulate_unit

N_TRIALS, N_FOLDS = 24, 6


def _serial_tune(tmp_path: Path, name: str, pruner: str, seed: int) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = plan_bowl_tune(tmp_path, name, "--sampler", "random", "--pruner", pruner, "--tune_seed", str(seed),
                          n_trials=N_TRIALS, n_folds=N_FOLDS)  # fmt: skip
    for unit in work_units(run_dirs_per_cv(load_plan(root)), "serial"):
        simulate_unit(unit.run_dirs)
    study._STUDIES.clear()
    return root


@pytest.mark.parametrize("pruner", ["median", "successive-halving", "wilcoxon"])
def test_replay_decides_as_a_real_serial_tune_with_that_pruner(tmp_path: Path, pruner: str) -> None:
    unpruned = _serial_tune(tmp_path / "none", "r", "none", seed=11)
    real = _serial_tune(tmp_path / pruner, "r", pruner, seed=11)
    replayed = replay_tune(unpruned, pruner)
    table = pl.read_parquet(naming.replay_table(unpruned, pruner)).sort("cv_name")
    truth = pl.read_parquet(collect(real).plan.root / naming.TUNE_INFOS).sort("cv_name")
    assert table["cv_name"].to_list() == truth["cv_name"].to_list()
    assert table["state"].to_list() == truth["state"].to_list()
    assert table["n_folds_done"].to_list() == truth["n_folds_done"].to_list()
    assert "pruned" in table["state"].to_list()  # the comparison decided something
    real_runs = sum(truth["n_runs"].to_list())
    assert (
        replayed.runs_recorded - replayed.runs_saved == real_runs
    )  # the runs P saved are the runs the real tune skipped
    best = truth.filter(pl.col("state") == "complete").sort(["score", "hp_index"], descending=[True, False])
    assert replayed.winner == best["cv_name"][0]


def test_replay_of_a_pruned_tune_marks_trials_the_recording_stopped_earlier_as_undecided(
    tmp_path: Path,
) -> None:
    halving = _serial_tune(tmp_path, "h", "successive-halving", seed=2)
    replayed = replay_tune(halving, "none")
    recorded_pruned = [t for t in replayed.trials if t.recorded_state.value == "pruned"]
    assert recorded_pruned and all(t.state is ReplayState.UNDECIDED for t in recorded_pruned)
    assert replayed.runs_saved == 0 and "undecided" in "\n".join(replayed.lines())


def test_replay_refuses_what_is_not_a_tune_or_not_a_pruner(tmp_path: Path) -> None:
    root = plan_bowl_tune(tmp_path, "x", n_trials=2, n_folds=2)
    with pytest.raises(
        UsageError, match=r"--pruner 'hyperband2' is not one of none, median, successive-halving"
    ):
        replay_tune(root, "hyperband2")
    assert not list(root.glob("replay-*.parquet"))


def test_the_python_api_replays_as_the_command_line(tmp_path: Path) -> None:
    import nestling

    unpruned = _serial_tune(tmp_path, "api", "none", seed=11)
    by_api = nestling.replay(unpruned, pruner="median", quiet=True)
    table = pl.read_parquet(naming.replay_table(unpruned, "median"))
    assert [t.state.value for t in by_api.trials] == table["state"].to_list()
    assert by_api.runs_saved == sum(table["runs_saved"].to_list()) > 0
    assert by_api.runs_saved == replay_tune(unpruned, "median").runs_saved
