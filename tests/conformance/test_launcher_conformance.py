"""One conformance suite run over every launcher (as Optuna runs one storage suite over every storage).

Each launcher gets the same plan: a cv of the echo task (nestling.testing.echo_task: the sleep task plus metrics
that echo the run's validation samples and seed), 2 folds x 2 seeds, cv-parallel, one epoch on CPU, through the
CLI as a user would run it (`--wait` for the detached SLURM launcher). Every launcher must give the same outcome:
every run a success, whose echo metrics are those of its own fold and seed (so a launcher that ran the wrong fold,
split or seed fails), the same run_infos table (rows, columns, metric values) as the local launcher, a launch.json
entry that round-trips through launch_record.LaunchRecord with the keys that launcher is documented to write, and
a `nestling status` that reads every run as a success.

The local launch is the reference of the others: it is built once per test run (support.built_once), whichever
xdist worker asks first. The SLURM variant is submitted with the rest of the SLURM work when the cluster comes up
(tests/slurm_work.py); run the others with `pytest tests/conformance -k "not slurm"`.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import slurm_work
from support import built_once, cli

from nestling.core.tree.launch_record import LaunchRecord

pytestmark = pytest.mark.min_versions  # submitit's local executor at the lowest accepted submitit (not SLURM there)

N_FOLDS, SEEDS = 2, (42, 21)
N_RUNS = N_FOLDS * len(SEEDS)
PLAN = ["cv", "--task", "nestling.testing.echo_task:EchoTask", "--hp", "sleep_s=0.0", "--max_epochs", "1",
        "--seeds", *map(str, SEEDS), "--n_folds", str(N_FOLDS), "--strategy", "cv-parallel", "--devices", "2",
        "--accelerator", "cpu", "--cpus_per_task", "1", "--mem_gb", "1", "--quiet"]  # fmt: skip
RECORD_KEYS = {
    "local": {"launcher", "started_at", "units", "workers", "lost_units", "finished_at", "saved_at"},
    "submitit-local": {"launcher", "submitit_folder", "arrays", "job_ids", "collector_job_id", "submitted_at",
                       "finished_at", "saved_at"},
    "slurm": {"launcher", "submitit_folder", "launch_dir", "max_array_size", "arrays", "job_ids",
              "collector_job_id", "submitted_at", "saved_at"},
}  # fmt: skip
VOLATILE = {"run_id", "duration", "checkpoint", "worker_startup_s",  # differ between any two launches of a plan
            "cuda_visible_devices",  # where it ran: submitit's local executor sets it empty, the local pool leaves it unset
            "code_commit", "code_dirty"}  # the built-in task's code is nestling's checkout: edited while the suite runs
SLURM = slurm_work.plan(
    "conf-slurm", 3,
    lambda art: [*PLAN, "--launcher", "slurm", "--wait", "--artifact_dir", str(art), "--name", "conf"],
    lambda art: art / "_cross_validations" / "conf",
)  # fmt: skip


@dataclass(frozen=True)
class Launched:
    launcher: str
    done: subprocess.CompletedProcess[str]
    root: Path

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*/run_result.json"))]

    def record(self) -> dict[str, Any]:
        launches: list[dict[str, Any]] = json.loads((self.root / "launch.json").read_text())["launches"]
        assert len(launches) == 1
        return launches[0]

    def run_infos(self) -> pl.DataFrame:
        return pl.read_parquet(self.root / "run_infos.parquet").sort("fold", "seed")


def _launch_once(launcher: str, shared: Path) -> Launched:
    """The plan launched by `launcher` once per test run; what the command printed is kept beside its tree."""

    def build(dir: Path) -> None:
        done = cli(*PLAN, "--launcher", launcher, "--artifact_dir", str(dir / "art"), "--name", "conf", timeout=600)
        (dir / "done.json").write_text(json.dumps([done.returncode, done.stdout, done.stderr]))

    dir = built_once(shared, f"conformance-{launcher}", build)
    rc, out, err = json.loads((dir / "done.json").read_text())
    return Launched(launcher, subprocess.CompletedProcess(PLAN, rc, out, err), dir / "art" / "_cross_validations" / "conf")


@pytest.fixture(params=["local", "submitit-local", pytest.param("slurm", marks=pytest.mark.slurm_work(SLURM))])
def launched(request: pytest.FixtureRequest, shared_dir: Path) -> Launched:
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")  # SLURM_CONF for this test's cli() calls
        command = request.getfixturevalue("slurm_work")[SLURM]
        return Launched("slurm", command.done(), command.root)
    return _launch_once(request.param, shared_dir)


@pytest.fixture
def reference(shared_dir: Path) -> Launched:
    return _launch_once("local", shared_dir)


def test_every_run_succeeds(launched: Launched) -> None:
    assert launched.done.returncode == 0, launched.done.stdout + launched.done.stderr
    results = launched.results()
    assert [r["status"] for r in results] == ["success"] * N_RUNS
    assert sorted((r["fold"], r["seed"]) for r in results) == sorted((f, s) for f in range(N_FOLDS) for s in SEEDS)
    assert all(r["error"] is None for r in results)


def test_each_run_saw_its_own_fold_and_seed(launched: Launched) -> None:
    """The echo metrics against the plan itself: the mean index of the fold's validation samples (splits.json)
    and the run's seed; the draw after seeding is the same for both folds of a seed, different between seeds."""
    splits = json.loads((launched.root / "splits.json").read_text())
    mean_index = [sum(int(s[1:]) for s in split["val"]) / len(split["val"]) for split in splits]
    assert len(set(mean_index)) == N_FOLDS  # the folds can be told apart by it
    draws: dict[int, set[float]] = {}
    for r in launched.results():
        metrics = r["metrics"]
        assert metrics["val/mean_index"] == pytest.approx(mean_index[r["fold"]]), (r["fold"], r["seed"])
        assert metrics["val/seed"] == r["seed"]
        draws.setdefault(r["seed"], set()).add(metrics["val/seed_draw"])
    assert sorted(draws) == sorted(SEEDS), draws
    assert all(len(d) == 1 for d in draws.values()) and len(set().union(*draws.values())) == len(SEEDS), draws


def test_run_infos_match_the_local_launcher(launched: Launched, reference: Launched) -> None:
    got, want = launched.run_infos(), reference.run_infos()
    assert got.columns == want.columns
    assert {"val/mean_index", "val/seed", "val/seed_draw"} <= set(got.columns)
    assert got.height == want.height == N_RUNS
    stable = [c for c in got.columns if c not in VOLATILE]
    for row, ref in zip(got.select(stable).iter_rows(named=True), want.select(stable).iter_rows(named=True), strict=True):
        for column in stable:
            if isinstance(ref[column], float):
                assert row[column] == pytest.approx(ref[column], rel=1e-6), column
            else:
                assert row[column] == ref[column], column


def test_launch_record_shape(launched: Launched) -> None:
    entry = launched.record()
    assert set(entry) == RECORD_KEYS[launched.launcher]
    assert entry["launcher"] == launched.launcher
    record = LaunchRecord.from_dict(entry)
    assert record.to_dict() == entry  # launch.json keeps its shape through the typed record
    assert record.submit_error is None and not record.lost_units and not record.lost_runs
    run_dirs = sorted(str(p.parent) for p in launched.root.glob("*/run_spec.json"))
    assert len(run_dirs) == N_RUNS
    if record.submitted:  # every run is named by exactly one array task, each task its own unit
        assert sorted(record.run_dirs) == run_dirs
        assert record.arrays is not None and sum(a.tasks for a in record.arrays) == N_RUNS
        assert record.job_ids == [a.job_id for a in record.arrays]
    else:  # the local pool: each of its two workers took a unit at once, and wrote its own log
        assert record.units == N_RUNS and record.workers == 2
        assert len({r["pid"] for r in launched.results()}) == 2
        assert sorted(p.name for p in (launched.root / "_workers").iterdir()) == ["worker-0.log", "worker-1.log"]


def test_status_reads_every_run_as_a_success(launched: Launched) -> None:
    done = cli("status", str(launched.root), "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert counts == {"success": N_RUNS, "failed": 0, "running": 0, "pending": 0, "lost": 0, "blocked": 0,
                      "not started": 0, "interrupted": 0, "pruned": 0, "paused": 0}
