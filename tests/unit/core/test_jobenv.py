"""The in-job environment (jobenv.JobEnvironment) and the preemption hand-off (jobenv.save_in_progress)."""

from __future__ import annotations

import os
import subprocess
import sys

from nestling.core.host import jobenv
from nestling.core.host.jobenv import JobEnvironment


def test_outside_slurm_is_a_one_task_job() -> None:
    env = JobEnvironment.from_environ({})
    assert (env.ntasks, env.global_rank, env.local_rank, env.multi_task) == (1, 0, 0, False)
    assert (env.job_id, env.array_job_id, env.array_task_id, env.node, env.restart_count) == (None,) * 4 + (0,)
    assert env.job_key == f"pid{os.getpid()}"


def test_srun_ranks_come_from_slurm_and_one_task_ranks_from_the_launcher() -> None:
    srun = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "RANK": "0", "SLURM_JOB_ID": "9"}
    env = JobEnvironment.from_environ(srun)
    assert (env.ntasks, env.global_rank, env.local_rank, env.multi_task) == (4, 3, 1, True)
    one_task = {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "RANK": "2", "LOCAL_RANK": "1"}
    env = JobEnvironment.from_environ(one_task)  # a ddp_fork child of a one-task array job
    assert (env.global_rank, env.local_rank, env.multi_task) == (2, 1, False)
    assert JobEnvironment.from_environ({"SLURM_NTASKS": ""}).ntasks == 1


def test_job_fields_and_key() -> None:
    env = JobEnvironment.from_environ(
        {"SLURM_JOB_ID": "57", "SLURM_ARRAY_JOB_ID": "50", "SLURM_ARRAY_TASK_ID": "7",
         "SLURMD_NODENAME": "n3", "SLURM_RESTART_COUNT": "2"}
    )  # fmt: skip
    assert (env.job_id, env.array_job_id, env.array_task_id, env.node, env.restart_count) == (
        "57", "50", "7", "n3", 2,
    )  # fmt: skip
    assert env.job_key == "50_7"
    assert JobEnvironment.from_environ({"SLURM_JOB_ID": "57"}).job_key == "57"
    assert JobEnvironment.from_environ({"SLURM_RESTART_COUNT": "x"}).restart_count == 0


def test_the_signal_goes_to_a_live_child_not_to_the_saver() -> None:
    saved: list[str] = []
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, sys, time\n"
         f"signal.signal({int(jobenv.PREEMPT_SIGNAL)}, lambda *a: sys.exit({jobenv.EXIT_REQUEUED}))\n"
         "print('ready', flush=True)\n"
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    with jobenv.on_preempt(lambda: saved.append("in-process")):
        jobenv.save_in_progress(child, timeout_s=30)
    assert child.wait(timeout=5) == jobenv.EXIT_REQUEUED
    assert saved == []


def test_a_child_that_ignores_the_signal_is_killed() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c",
         f"import signal, time; signal.signal({int(jobenv.PREEMPT_SIGNAL)}, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    jobenv.save_in_progress(child, timeout_s=0.5)
    assert child.wait(timeout=5) == -9


def test_without_a_child_the_newest_registered_saver_runs_while_registered() -> None:
    saved: list[str] = []
    jobenv.save_in_progress()  # nothing registered: nothing to save, no error
    with jobenv.on_preempt(lambda: saved.append("outer")):
        with jobenv.on_preempt(lambda: saved.append("inner")):
            jobenv.save_in_progress()
        jobenv.save_in_progress(None)
    jobenv.save_in_progress()
    assert saved == ["inner", "outer"]
