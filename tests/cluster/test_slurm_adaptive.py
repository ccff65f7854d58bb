"""Adaptive search on SLURM (issue 13): detached arrays whose tasks draw their trials themselves.

Runs on the local SLURM cluster (tests/cluster's fixtures); the lead runs it after the merge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import slurm_work
from support import assert_halving_pruned, cli, poll

pytestmark = pytest.mark.cluster

SPACE = """
[hyperparameters]
lr = {distribution = "loguniform", low = 1e-5, high = 1.0}
width = {low = 0.0, high = 1.0}
depth = {low = 1, high = 10}
"""


def _slurm_bowl_tune(tmp_path: Path, name: str, *flags: str) -> Path:
    """A tune-parallel bowl tune submitted as SLURM arrays (1 epoch, 1 CPU, 1 GB per task); returns its dir."""
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    art = tmp_path / "art"
    done = cli("tune", "--task", "bowl", "--hpconfig", str(space), "--n_seeds", "1", "--max_epochs", "1",
               "--accelerator", "cpu", "--cpus_per_task", "1", "--mem_gb", "1", "--strategy", "tune-parallel",
               "--launcher", "slurm", "--artifact_dir", str(art), "--name", name, "--quiet", *flags)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return art / name


def _argv(art: Path) -> list[str]:
    art.mkdir(parents=True, exist_ok=True)
    (art / "space.toml").write_text(SPACE)
    return ["tune", "--task", "bowl", "--hpconfig", str(art / "space.toml"), "--sampler", "tpe", "--pruner",
            "successive-halving", "--n_trials", "6", "--n_folds", "2", "--n_seeds", "1", "--max_epochs", "1",
            "--accelerator", "cpu", "--cpus_per_task", "1", "--mem_gb", "1", "--strategy", "tune-parallel",
            "--launcher", "slurm", "--array_parallelism", "3", "--artifact_dir", str(art), "--name", "ad",
            "--quiet"]  # fmt: skip


AD = slurm_work.plan("ad", 5, _argv, lambda art: art / "ad")


@pytest.mark.slurm_work(AD)
def test_detached_tune_parallel_tpe_arrays_draw_their_trials(slurm_work: dict[str, Any], slurm_cluster: str) -> None:
    """6 trials x 2 folds, tune-parallel, at most 3 tasks at once, detached: the submitting CLI returns before any
    draw; the array tasks (and those taking over waiting units) draw every trial once; the collector job writes
    tune_infos.parquet with the states; successive halving pruned some trials at its rung."""
    ad = slurm_work[AD]
    done = ad.done()
    assert done.returncode == 0, done.stdout + done.stderr
    tune = ad.root
    poll(lambda: (tune / "tune_infos.parquet").is_file(), 300, "tune_infos.parquet from the collector job")
    draws = sorted((tune / "_trials").glob("*.json"))
    assert [p.name for p in draws] == sorted(f"{i}.json" for i in range(6))
    records = [json.loads(p.read_text()) for p in draws]
    assert len({json.dumps(r["params"], sort_keys=True) for r in records}) == 6
    ended = ad.command.ended_at
    assert ended is not None and all(r["drawn_time"] > ended for r in records)  # drawn after the CLI returned
    assert sorted(p.name for p in tune.glob("ad-cv*")) == sorted(f"ad-cv{i}" for i in range(6))
    table = pl.read_parquet(tune / "tune_infos.parquet")
    assert table.height == 6 and set(table["state"].to_list()) <= {"complete", "pruned"}
    assert sorted(table["drawn_at"].to_list()) == list(range(6))
    counts = json.loads(cli("status", str(tune), "--json").stdout)["counts"]
    assert counts["success"] + counts["pruned"] == 12 and counts["lost"] == 0
    pruned = table.filter(pl.col("state") == "pruned")["hp_index"].to_list()
    assert assert_halving_pruned(tune, n_folds=2) == sorted(pruned)  # pruned at the rung, never the rung's best


def test_wilcoxon_pruner_on_slurm_arrays_decides_as_the_local_serial_tune(slurm_cluster: str, tmp_path: Path) -> None:
    """--pruner wilcoxon (issue 25 #3) in SLURM array tasks, one at a time so the trials run in order: the bowl task
    is deterministic, so the decisions are those of the local serial tune (tests/e2e/test_replay.py): trials 1 and 2
    worse than trial 0 on four paired folds, stopped before their fifth."""
    tune = _slurm_bowl_tune(tmp_path, "wx", "--sampler", "random", "--pruner", "wilcoxon", "--tune_seed", "3",
                            "--n_trials", "4", "--n_folds", "5", "--array_parallelism", "1")  # fmt: skip
    poll(lambda: (tune / "tune_infos.parquet").is_file(), 600, "tune_infos.parquet from the collector job")
    table = pl.read_parquet(tune / "tune_infos.parquet").sort("hp_index")
    assert table["state"].to_list() == ["complete", "pruned", "pruned", "complete"]
    assert table["n_folds_done"].to_list() == [5, 4, 4, 5]
    counts = json.loads(cli("status", str(tune), "--json").stdout)["counts"]
    assert counts["success"] == 18 and counts["pruned"] == 2 and counts["lost"] == 0
