"""The SLURM launcher on the real local cluster (slurm/local-cluster), driven through the CLI as a user would.

Every run uses the `sleep` task on CPU; `--gpus_per_task 1` still asks SLURM for a (fake) GPU through GRES, so the
pinning is real even though training is not on a GPU. Waits are bounded polls, never fixed sleeps. The plans that
only need to be checked once they ended are submitted when the run brings the cluster up (tests/slurm_work.py);
pin goes first, so its four tasks get the four GPUs at once.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import slurm_work
from support import cli, poll

pytestmark = pytest.mark.cluster

BASE = ["--task", "sleep", "--accelerator", "cpu", "--cpus_per_task", "1", "--mem_gb", "1", "--max_epochs", "1",
        "--n_seeds", "1", "--quiet"]  # fmt: skip


def slurm(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=30, check=True)
    return done.stdout


def results(root: Path) -> list[dict[str, Any]]:
    """Every run_result.json below a cv (depth 1) or tune (depth 2) dir."""
    files = [*root.glob("*/run_result.json"), *root.glob("*/*/run_result.json")]
    return [json.loads(f.read_text()) for f in sorted(files)]


def last_launch(root: Path) -> dict[str, Any]:
    return json.loads((root / "launch.json").read_text())["launches"][-1]


def status(root: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = cli("status", str(root), "--json", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def queue_ids(env: dict[str, str] | None = None) -> set[str]:
    return set(slurm("squeue", "-h", "-r", "-o", "%i", env=env).split())


def slurm_cv(name: str, order: int, *args: str) -> str:
    """A cv of the sleep task on the SLURM launcher, submitted with the SLURM work (tests/slurm_work.py)."""
    return slurm_work.plan(
        name, order,
        lambda art: ["cv", *BASE, *args, "--launcher", "slurm", "--artifact_dir", str(art), "--name", name],
        lambda art: art / "_cross_validations" / name,
    )  # fmt: skip


PIN = slurm_cv("pin", 0, "--hp", "sleep_s=3", "--n_folds", "4", "--strategy", "cv-parallel", "--gpus_per_task", "1",
               "--wait")  # fmt: skip


@pytest.mark.slurm_work(PIN)
def test_cv_parallel_gets_one_gpu_per_run(slurm_work: dict[str, Any], slurm_cluster: str) -> None:
    """4 runs on the 4 fake GPUs of 2 nodes: one array, one task and one distinct (node, GPU) per run."""
    pin = slurm_work[PIN]
    done = pin.done()
    assert done.returncode == 0, done.stdout + done.stderr
    cv = pin.root
    runs = results(cv)
    assert [r["status"] for r in runs] == ["success"] * 4
    pairs = {(r["host"], r["cuda_visible_devices"]) for r in runs}
    assert len(pairs) == 4, pairs
    assert {host for host, _ in pairs} == {"node1", "node2"}
    launch = last_launch(cv)
    assert [a["tasks"] for a in launch["arrays"]] == [4]
    assert {r["slurm_job_id"] for r in runs} == {launch["arrays"][0]["job_id"]}
    assert sorted(r["slurm_array_task_id"] for r in runs) == ["0", "1", "2", "3"]
    assert (cv / "run_infos.parquet").is_file()


def _space(art: Path, values: str) -> str:
    art.mkdir(parents=True, exist_ok=True)
    (art / "space.toml").write_text(f"[hyperparameters]\nvalue = {values}\n")
    return str(art / "space.toml")


TP = slurm_work.plan(
    "tp", 2,
    lambda art: ["tune", *BASE, "--hp", "sleep_s=0.5", "--hpconfig", _space(art, "[0.4, 0.6]"), "--sampler",
                 "grid", "--n_trials", "2", "--n_folds", "2", "--strategy", "tune-parallel", "--launcher", "slurm",
                 "--artifact_dir", str(art), "--name", "tp", "--wait"],
    lambda art: art / "tp",
)  # fmt: skip


@pytest.mark.slurm_work(TP)
def test_tune_parallel_runs_each_cv_in_one_task(slurm_work: dict[str, Any], slurm_cluster: str) -> None:
    """2 trials x 2 folds: one array of 2 tasks; the runs of a cv share a task and a process."""
    tp = slurm_work[TP]
    done = tp.done()
    assert done.returncode == 0, done.stdout + done.stderr
    tune = tp.root
    launch = last_launch(tune)
    assert [a["tasks"] for a in launch["arrays"]] == [2]
    runs = results(tune)
    assert len(runs) == 4 and all(r["status"] == "success" for r in runs)
    by_cv: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_cv.setdefault(r["cv_name"], []).append(r)
    assert len(by_cv) == 2
    tasks = set()
    for cv_runs in by_cv.values():
        assert len({r["slurm_array_task_id"] for r in cv_runs}) == 1
        assert len({(r["host"], r["pid"]) for r in cv_runs}) == 1  # in series, in one process
        tasks.add(cv_runs[0]["slurm_array_task_id"])
        assert all(r["cuda_visible_devices"] is None for r in cv_runs)  # --accelerator cpu: no GRES
    # each cv in its own task, unless one task still waited in the queue when the other was done: then that one
    # took over its unit (array_claims) and ran both cvs, one after the other, in its warm process
    log = "".join(p.read_text() for p in Path(launch["submitit_folder"]).glob("*_log.out"))
    took_over = log.count("took over unit")
    assert (tasks == {"0", "1"} and took_over == 0) or (len(tasks) == 1 and took_over == 1), (tasks, took_over)
    assert tasks <= {"0", "1"}
    assert pl.read_parquet(tune / "tune_infos.parquet").height == 2


STEAL = slurm_cv("steal", 1, "--hp", "sleep_s=1", "--n_folds", "6", "--strategy", "cv-parallel", "--array_parallelism",
                 "2", "--wait")  # fmt: skip


@pytest.mark.slurm_work(STEAL)
def test_finished_tasks_take_over_waiting_units(slurm_work: dict[str, Any], slurm_cluster: str) -> None:
    """6 runs, at most 2 tasks at once: tasks 0 and 1 run all six, each in one warm process; the 4 other tasks
    never start: the tasks that took over their units cancelled them. On a cluster busy with the suite's other work
    task 1 may still wait when task 0 is done with its unit: then task 0 takes over task 1's unit too."""
    steal = slurm_work[STEAL]
    done = steal.done()
    assert done.returncode == 0, done.stdout + done.stderr
    cv = steal.root
    runs = results(cv)
    assert [r["status"] for r in runs] == ["success"] * 6
    ran = {r["slurm_array_task_id"] for r in runs}
    assert ran in ({"0", "1"}, {"0"}, {"1"}), ran  # only tasks within --array_parallelism 2 ever started
    assert len({(r["host"], r["pid"]) for r in runs}) == len(ran)  # Python + torch started once per task, not per run
    launch = last_launch(cv)
    claims = [c for c in Path(launch["launch_dir"], "claims").iterdir() if c.name.isdigit()]
    holders = [json.loads(c.read_text())["job"].split("_")[1] for c in claims]
    assert len(holders) == 6 and set(holders) == ran
    folder, array = Path(launch["submitit_folder"]), launch["arrays"][0]["job_id"]
    log = "".join(p.read_text() for p in folder.glob("*_log.out"))
    assert log.count("took over unit") == 6 - len(ran)  # 4 when both tasks ran
    started = {p.name.split("_")[1] for p in folder.glob(f"{array}_*_log.out")}
    assert started == ran  # no other task ran (a task that starts writes its log) ...
    assert not queue_ids() & {f"{array}_{i}" for i in range(6)}  # ... and are gone: cancelled
    final = status(cv)
    assert final["counts"]["success"] == 6


SPLIT_PLAN = ["cv", *BASE, "--hp", "sleep_s=1", "--n_folds", "10", "--strategy", "cv-parallel", "--launcher",
              "slurm", "--gpus_per_task", "1"]  # fmt: skip


def test_plan_larger_than_max_array_size_is_split(
    small_array_cluster: dict[str, str], tmp_path: Path
) -> None:
    """MaxArraySize=4 and 10 tasks: 3 sbatch calls (4, 4, 2 tasks) plus the collector; nothing is trained."""
    env = small_array_cluster
    # begin=now+1hour keeps every task pending: the test is about submission, not training.
    done = cli(*SPLIT_PLAN, "--artifact_dir", str(tmp_path), "--name", "split", "--slurm_extra", "begin=now+1hour",
               env=env)  # fmt: skip
    launch = last_launch(tmp_path / "_cross_validations" / "split") if done.returncode == 0 else {}
    ids = [*launch.get("job_ids", []), launch.get("collector_job_id")]
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert launch["max_array_size"] == 4
        assert [a["tasks"] for a in launch["arrays"]] == [4, 4, 2]
        arrays = {a["job_id"] for a in launch["arrays"]}
        assert len(arrays) == 3
        queued = {line.split("_")[0] for line in queue_ids(env)}
        assert arrays <= queued
        assert launch["collector_job_id"] in queued
    finally:
        if any(ids):
            slurm("scancel", *[i for i in ids if i], env=env)


def test_dry_run_prints_scripts_and_submits_nothing(
    small_array_cluster: dict[str, str], tmp_path: Path
) -> None:
    env = small_array_cluster
    before = queue_ids(env)
    done = cli(*SPLIT_PLAN, "--artifact_dir", str(tmp_path), "--name", "dry", "--dry_run", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    arrays = [line for line in done.stdout.splitlines() if line.startswith("#SBATCH --array=")]
    assert [a.split("=")[1].split("%")[0] for a in arrays] == ["0-3", "0-3", "0-1"], arrays
    assert "#SBATCH --gres=gpu:1" in done.stdout
    assert "#SBATCH --job-name=nestling-dry" in done.stdout
    assert len(list((tmp_path / "_dry_run" / "dry").glob("*.sbatch"))) == 3
    assert "3 array(s)" in done.stdout
    assert not (tmp_path / "_cross_validations").exists()
    assert not list(tmp_path.rglob("run_spec.json"))
    assert queue_ids(env) == before


DET = slurm_cv("det", 3, "--hp", "sleep_s=5", "--n_folds", "2", "--strategy", "cv-parallel")


@pytest.mark.slurm_work(DET)
def test_collector_job_writes_parquet_without_a_client(slurm_work: dict[str, Any], slurm_cluster: str) -> None:
    """Detached: the CLI returns after submission; the afterany collector job writes run_infos.parquet."""
    det = slurm_work[DET]
    done = det.done()
    assert done.returncode == 0, done.stdout + done.stderr
    cv = det.root
    launch = last_launch(cv)
    collector = launch["collector_job_id"]
    assert collector and "submitted:" in done.stdout
    assert "0/2" not in done.stdout  # no progress bar left at 0 after a submission (issue 21 #12)
    log = Path(launch["submitit_folder"]) / f"{collector}_0_log.out"
    poll(lambda: (cv / "run_infos.parquet").is_file(), 120, "run_infos.parquet from the collector job")
    poll(lambda: log.is_file() and "score" in log.read_text(), 30, f"the collector's summary in {log}")
    poll(lambda: (cv / "report.html").is_file(), 60, "report.html from the collector job (collect --report)")
    table = pl.read_parquet(cv / "run_infos.parquet")
    assert table.height == 2
    assert table["status"].to_list() == ["success", "success"]
    # the CLI had returned before any run finished and before the parquet existed: written without a client
    ended = det.command.ended_at
    assert ended is not None
    written = {p: p.stat().st_mtime for p in [*cv.glob("*/run_result.json"), cv / "run_infos.parquet"]}
    assert len(written) == 3 and all(t > ended for t in written.values()), (ended, written)


def test_status_pending_running_and_lost(slurm_cluster: str, tmp_path: Path) -> None:
    """3 runs, one at a time: running=1 pending=2; a cancelled pending task is lost; at the end nothing is open."""
    env = dict(os.environ)
    done = cli("cv", *BASE, "--hp", "sleep_s=15", "--n_folds", "3", "--strategy", "cv-parallel", "--launcher",
               "slurm", "--array_parallelism", "1", "--artifact_dir", str(tmp_path), "--name", "st")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cv = tmp_path / "_cross_validations" / "st"
    launch = last_launch(cv)
    array = launch["arrays"][0]["job_id"]
    try:
        seen = poll(
            lambda: (s := status(cv, env))["counts"]["running"] == 1 and s,
            90,
            "one running run",
        )
        assert seen["counts"] == {"success": 0, "failed": 0, "running": 1, "pending": 2, "lost": 0, "blocked": 0,
                                  "not started": 0, "interrupted": 0, "pruned": 0, "paused": 0}
        victim = next(r for r in seen["runs"] if r["state"] == "pending")
        assert victim["job"].startswith(f"{array}_")
        slurm("scancel", victim["job"], env=env)

        def state_of_victim() -> str | None:
            runs = status(cv, env)["runs"]
            state = next(r["state"] for r in runs if r["run_id"] == victim["run_id"])
            return state if state == "lost" else None

        poll(state_of_victim, 30, f"{victim['job']} to be lost")
    finally:
        slurm("scancel", array, env=env)  # the collector (afterany) still runs
    final = poll(
        lambda: (s := status(cv, env))["counts"]["running"] + s["counts"]["pending"] == 0 and s,
        60,
        "every run to end",
    )
    counts = final["counts"]
    assert counts["success"] + counts["failed"] + counts["lost"] == 3
    assert counts["lost"] >= 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--partition", "nope"], "--partition 'nope' does not exist on this cluster; partitions: debug"),
        (["--gpus_per_task", "9"], "--gpus_per_task 9 exceeds the 2 GPUs per node of partition 'debug'; ask for "
                                   "fewer GPUs or use --accelerator cpu"),
        (["--slurm_extra", "novalue"], "--slurm_extra 'novalue' is not KEY=VALUE; e.g. --slurm_extra "
                                       "reservation=gpu-week"),
    ],
)  # fmt: skip
def test_bad_slurm_input_exits_2(slurm_cluster: str, tmp_path: Path, flags: list[str], message: str) -> None:
    """Refused with one line naming the value and the fix, against the real cluster's sinfo."""
    art = tmp_path / "art"
    done = cli("cv", *BASE, "--n_folds", "2", "--strategy", "cv-parallel", "--launcher", "slurm",
               "--artifact_dir", str(art), *flags)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [f"nestling: error: {message}"]
    assert not art.exists()


RT = slurm_work.plan(
    "rt", 4,
    lambda art: ["tune", *BASE, "--hp", "sleep_s=1", "--hpconfig", _space(art, "[0.3, 0.7]"), "--sampler", "grid",
                 "--n_trials", "2", "--n_folds", "2", "--test_split", "random", "--strategy", "cv-parallel",
                 "--launcher", "slurm", "--artifact_dir", str(art), "--name", "rt", "--retrain"],
    lambda art: art / "rt",
)  # fmt: skip


@pytest.mark.slurm_work(RT)
def test_detached_tune_with_retrain_ends_with_a_tested_model(slurm_work: dict[str, Any], slurm_cluster: str) -> None:
    """`nestling tune --retrain` on SLURM (issue 14 §2): the retrain job (afterok on the collector) plans the retrain
    and submits its arrays with the tune's launch options; its collector writes final_infos.parquet."""
    rt = slurm_work[RT]
    done = rt.done()
    assert done.returncode == 0, done.stdout + done.stderr
    tune = rt.root
    launch = last_launch(tune)
    assert launch["retrain_job_id"] and f"retrain:   job {launch['retrain_job_id']}" in done.stdout
    script = (Path(launch["launch_dir"]) / "retrain.sbatch").read_text()
    assert f"--dependency=afterok:{launch['collector_job_id']}" in script
    final = tune / "rt-final"
    poll(lambda: (final / "final_infos.parquet").is_file(), 240, "final_infos.parquet of the retrain")
    plan = json.loads((final / "plan.json").read_text())
    assert plan["kind"] == "retrain" and plan["cvs"][0]["hparams"]["value"] == 0.7
    assert plan["options"]["launch"]["launcher"] == "slurm"
    runs = results(final)
    assert [r["status"] for r in runs] == ["success"]
    assert runs[0]["slurm_job_id"] == last_launch(final)["arrays"][0]["job_id"]
    infos = pl.read_parquet(final / "final_infos.parquet")
    assert infos["row"].to_list() == ["seed", "mean", "std", "sem"]
    assert infos["test/JaccardIndex"][0] == pytest.approx(0.7)
    # the retrain's collector job writes the tune's report again, now with the retrain (issue 21 #4)
    poll(lambda: "Retrain: test metrics" in (tune / "report.html").read_text(), 60, "the retrain in the tune's report")
