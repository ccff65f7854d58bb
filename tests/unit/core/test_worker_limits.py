"""Issue 21 #2: a worker's thread pools follow the CPUs it was given (NESTLING_CPUS from its launcher, else SLURM's
--cpus-per-task, else its affinity), unless the user set the variables. Through real workers on every launcher:
tests/e2e/test_worker_threads_local.py, tests/cluster/test_worker_threads_slurm.py, tests/integration/test_container_launchers.py."""

from __future__ import annotations

import os
import sys
import types

import pytest

from nestling.core.containers.env import plan_env
from nestling.core.host import worker_limits
from nestling.core.host.worker_limits import CPUS_ENV, THREAD_VARIABLES, UMASK_ENV


def test_the_slurm_task_s_cpus_count_before_the_affinity() -> None:
    assert worker_limits.available_cpus({"SLURM_CPUS_PER_TASK": "3"}) == 3
    assert worker_limits.available_cpus({}) == len(os.sched_getaffinity(0))
    assert worker_limits.available_cpus({"SLURM_CPUS_PER_TASK": "0"}) == len(os.sched_getaffinity(0))
    assert worker_limits.share(2, {"SLURM_CPUS_PER_TASK": "8"}) == 4
    assert worker_limits.share(5, {"SLURM_CPUS_PER_TASK": "2"}) == 1  # never below one


def test_the_launcher_s_budget_sets_every_thread_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    set_to: list[int] = []
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(set_num_threads=set_to.append))
    env = {CPUS_ENV: "3", "SLURM_CPUS_PER_TASK": "8"}
    applied = worker_limits.apply(env)
    assert (applied.cpus, applied.threads, applied.user_set) == (3, 3, ())
    assert {var: env[var] for var in THREAD_VARIABLES} == dict.fromkeys(THREAD_VARIABLES, "3")
    assert set_to == [3]  # torch, already loaded, resized


def test_variables_the_user_set_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    set_to: list[int] = []
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(set_num_threads=set_to.append))
    env = {"SLURM_CPUS_PER_TASK": "1", "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "2"}
    applied = worker_limits.apply(env)
    assert applied.user_set == ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["OPENBLAS_NUM_THREADS"]) == ("4", "2", "1")
    assert (applied.cpus, applied.threads, set_to) == (1, 4, [4])  # torch follows the user's OMP_NUM_THREADS


def test_the_launcher_s_umask_is_applied_in_the_worker() -> None:
    previous = os.umask(0o027)
    try:
        env = worker_limits.for_worker({}, cpus=2)
        assert env == {CPUS_ENV: "2", UMASK_ENV: "0027"}
        os.umask(0o022)  # a container runtime's default
        worker_limits.apply(env)
        assert os.umask(0o022) == 0o027
    finally:
        os.umask(previous)


def test_a_containerised_worker_gets_the_budget_and_the_user_s_variables() -> None:
    host = {CPUS_ENV: "2", UMASK_ENV: "0022", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "HOME": "/root"}
    assert plan_env(host, []).literal == {k: v for k, v in host.items() if k != "HOME"}
