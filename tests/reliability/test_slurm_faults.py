"""Faults on the real local SLURM cluster: preemption, a time limit shorter than training, a killed --wait driver.

The scenarios start with the first test of this directory and run while the other tests do; a background thread
injects the faults (see _slurm_faults.py). Here each test waits for its scenario to end and checks its tree.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _reliability import check_tree, poll, result
from _slurm_faults import FAULTS, SlurmFaults, scontrol_job

pytestmark = [pytest.mark.cluster, pytest.mark.slurm_work(FAULTS)]


def _logs(folder: Path, job: str) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob(f"{job}_*log.*")))


def test_preemption_checkpoints_requeues_and_resumes(slurm_faults: SlurmFaults) -> None:
    s = slurm_faults.preempt
    poll(lambda: s.done(slurm_faults.slurm_env), 240, "the preempt scenario to end")
    assert slurm_faults.errors == []
    sig = slurm_faults.signalled
    assert sig, "task 0 was never signalled"
    launch = s.launch()
    job = sig["job"]
    assert job == f"{launch['arrays'][0]['job_id']}_0"  # an array task: N_i
    victim = Path(sig["run_dir"])

    runs = check_tree(s.root, s.max_epochs, collect=False)  # the collector job wrote the parquet
    res = result(victim)
    epochs = runs[res["run_name"]]["epochs"]
    assert res["attempt"] == 2
    assert (
        epochs[1][: len(sig["epochs_done"])] == sig["epochs_done"]
    )  # what attempt 1 had when the signal came
    assert epochs[2][0] == epochs[1][-1] + 1  # attempt 2 resumed after the last epoch of attempt 1
    others = [r for name, r in runs.items() if name != res["run_name"]]
    assert [r["result"]["attempt"] for r in others] == [1]
    # requeued once (attempt 2 above) and not held forever (it ended); scontrol forgets a job MinJobAge (300 s) after
    # it ended, which the suite's SLURM work, submitted when the cluster comes up, may pass before this test runs
    known = scontrol_job(job, slurm_faults.slurm_env)
    assert known.get("Restarts", "1") == "1", known
    assert slurm_faults.released.get(job) == [1]
    log = _logs(Path(launch["submitit_folder"]), launch["arrays"][0]["job_id"] + "_0")
    assert "this job is preempted" in log
    # the sleep task's plain DataLoader cannot resume mid-epoch: the run's hook says it resumes from last.ckpt
    assert "the next attempt resumes from" in log and "last.ckpt" in log
    assert not (victim / "checkpoints" / "interrupted.ckpt").exists()


def test_time_limit_shorter_than_training_checkpoints_and_requeues(slurm_faults: SlurmFaults) -> None:
    s = slurm_faults.timelimit
    poll(lambda: s.done(slurm_faults.slurm_env), 420, "the timelimit scenario to end")
    assert slurm_faults.errors == []
    launch = s.launch()
    (array,) = launch["arrays"]
    assert (
        array["tasks"] == 1 and "_" not in array["job_id"]
    )  # one run, one task: a plain job (id N, not N_i)
    job = array["job_id"]
    released = slurm_faults.released.get(job, [])  # the job's Restarts count at each release by the fault thread
    # scontrol forgets a job MinJobAge (300 s) after it ended, which a busy suite may pass before this test runs:
    # then the count the fault thread saw at its last release stands for it
    restarts = int(scontrol_job(job, slurm_faults.slurm_env).get("Restarts", str(max(released, default=0))))
    assert restarts >= 1, f"the job was never requeued (releases seen: {released})"
    (run,) = check_tree(s.root, s.max_epochs, collect=False).values()
    assert 2 <= run["result"]["attempt"] <= restarts + 1  # at most one attempt per incarnation of the job
    # 96 s of training cannot fit in one attempt (signalled 60 to 90 s after its start): epochs were completed by
    # several attempts, none twice
    assert sum(1 for epochs in run["epochs"].values() if epochs) >= 2, run["epochs"]
    log = _logs(Path(launch["submitit_folder"]), job)
    assert "this job is timed-out" in log and "not requeued" not in log


def test_killed_wait_driver_loses_nothing(slurm_faults: SlurmFaults) -> None:
    s = slurm_faults.driver
    poll(lambda: s.done(slurm_faults.slurm_env), 240, "the driver scenario to end")
    assert slurm_faults.errors == []
    assert slurm_faults.driver_killed_at is not None
    assert s.driver is not None and s.driver.returncode == -9
    launch = s.launch()
    collector_log = Path(launch["submitit_folder"]) / f"{launch['collector_job_id']}_0_log.out"
    poll(
        lambda: collector_log.is_file() and "score" in collector_log.read_text(),  # its summary table
        30,
        "the collector's log",
    )
    assert os.path.getmtime(s.root / "run_infos.parquet") > slurm_faults.driver_killed_at
    check_tree(s.root, s.max_epochs, collect=False)  # the parquet of the collector job, not ours
