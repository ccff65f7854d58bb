"""--pruner wilcoxon and `nestling replay` from the command line with real workers (issue 25 #3, #4): a serial
random tune with the Wilcoxon pruner decides what `nestling replay --pruner wilcoxon` says of its unpruned twin (the
same seed, so the same configurations and, the bowl task being deterministic, the same scores)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from support import cli

from nestling.core.tree import naming

SPACE = """
[hyperparameters]
lr = {distribution = "loguniform", low = 1e-5, high = 1.0}
width = {low = 0.0, high = 1.0}
depth = {low = 1, high = 10}
"""


def _tune(tmp_path: Path, name: str, pruner: str, *extra: str) -> Path:
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    done = cli("tune", "--task", "bowl", "--hpconfig", str(space), "--n_folds", "5", "--n_seeds", "1",
               "--max_epochs", "1", "--accelerator", "cpu", "--artifact_dir", str(tmp_path / "art"), "--quiet",
               "--name", name, "--sampler", "random", "--tune_seed", "3", "--n_trials", "4", "--pruner", pruner, *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tmp_path / "art" / name


def test_a_real_wilcoxon_tune_decides_what_the_replay_of_its_unpruned_twin_says(tmp_path: Path) -> None:
    unpruned = _tune(tmp_path, "none", "none")
    replayed = cli("replay", str(unpruned), "--pruner", "wilcoxon")
    assert replayed.returncode == 0, replayed.stderr
    assert (
        "replay --pruner wilcoxon: 2 of 4 trials pruned, 2 of 20 recorded runs saved (10%)" in replayed.stdout
    )
    real = _tune(tmp_path, "wilcoxon", "wilcoxon")
    table = pl.read_parquet(naming.replay_table(unpruned, "wilcoxon"))
    truth = pl.read_parquet(real / naming.TUNE_INFOS).sort("hp_index")
    assert (
        table["state"].to_list() == truth["state"].to_list() == ["complete", "pruned", "pruned", "complete"]
    )
    assert table["n_folds_done"].to_list() == truth["n_folds_done"].to_list() == [5, 4, 4, 5]
    assert sum(truth["n_runs"].to_list()) == 18  # the two pruned trials never started their fifth fold
    refused = cli("replay", str(real), "--pruner", "bogus")
    assert refused.returncode == 2 and "--pruner 'bogus' is not one of" in refused.stderr


def test_wilcoxon_with_tune_parallel_workers_ends_every_trial_complete_or_pruned(tmp_path: Path) -> None:
    """Two workers run trials side by side (which trial is the best when another asks depends on timing, so only
    what must hold is checked): every trial complete, or pruned before its fifth fold, and no run lost."""
    tune = _tune(tmp_path, "tp", "wilcoxon", "--strategy", "tune-parallel", "--devices", "2")
    table = pl.read_parquet(tune / naming.TUNE_INFOS)
    for state, folds in zip(table["state"].to_list(), table["n_folds_done"].to_list(), strict=True):
        assert (state, folds) in (("complete", 5), ("pruned", 4))
    assert "complete" in table["state"].to_list()
    assert sum(table["n_runs"].to_list()) == 20 - table.filter(pl.col("state") == "pruned").height
