"""What a launcher hands every worker process besides its devices, and the worker applies before torch loads: the
CPUs it may use and the umask of the command that launched it.

Threads (issue 21 #2): torch, OpenMP, MKL and OpenBLAS size their pools to the machine's cores, not to the CPUs a
job was given, so on a node without core binding the runs of several tasks oversubscribe it (a tune took 60 s
instead of 16 s). Each worker therefore sets torch's intra-op threads and the usual `*_NUM_THREADS` variables to its
CPU budget: `NESTLING_CPUS` where a launcher split the machine (the local pool, packed SLURM workers,
submitit-local), else SLURM's `SLURM_CPUS_PER_TASK`, else the CPUs this process may run on. A variable the user
set is left as it is (torch then follows `OMP_NUM_THREADS`).

Umask (issue 21 #3): a worker in a docker/podman image starts with the image's umask (0022), not the user's;
`NESTLING_UMASK` carries the launching process's, so its files get the modes the user's own would.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from nestling.core.tree.atomic import current_umask

CPUS_ENV = "NESTLING_CPUS"
UMASK_ENV = "NESTLING_UMASK"
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",  # OpenMP: torch's intra-op pool, and every OpenMP library
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",  # Apple Accelerate
    "NUMEXPR_NUM_THREADS",
)
WORKER_VARIABLES = (CPUS_ENV, UMASK_ENV, *THREAD_VARIABLES)  # what a containerised worker takes from its launcher


def _positive(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None


def available_cpus(environ: Mapping[str, str] | None = None) -> int:
    """The CPUs this process may use: the SLURM task's `--cpus-per-task`, else its CPU affinity (a cgroup, taskset or
    SLURM's core binding narrow it), else the machine's count."""
    env = os.environ if environ is None else environ
    slurm = _positive(env.get("SLURM_CPUS_PER_TASK"))
    if slurm is not None:
        return slurm
    with contextlib.suppress(AttributeError, OSError):  # no sched_getaffinity on macOS
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def share(workers: int, environ: Mapping[str, str] | None = None) -> int:
    """Each of `workers` processes that run side by side on this machine gets this many CPUs (at least one)."""
    return max(1, available_cpus(environ) // max(1, workers))


def for_worker(env: MutableMapping[str, str], cpus: int | None = None) -> MutableMapping[str, str]:
    """Add what a worker started with `env` inherits: its CPU budget (None: what the worker finds itself) and this
    process's umask. Returns `env`."""
    if cpus is not None:
        env[CPUS_ENV] = str(max(1, cpus))
    env[UMASK_ENV] = f"{current_umask():04o}"
    return env


@dataclass(frozen=True)
class Applied:
    """What a worker applied: its CPU budget, torch's intra-op threads, and the variables the user had set."""

    cpus: int
    threads: int
    user_set: tuple[str, ...]


def apply(environ: MutableMapping[str, str] | None = None) -> Applied:
    """In the worker, before torch is imported (and again after, harmlessly): the umask, the thread variables the
    user left unset, and torch's intra-op threads when torch is already loaded."""
    env = os.environ if environ is None else environ
    umask = env.get(UMASK_ENV)
    if umask:
        with contextlib.suppress(ValueError):
            os.umask(int(umask, 8))
    cpus = _positive(env.get(CPUS_ENV)) or available_cpus(env)
    user_set = tuple(var for var in THREAD_VARIABLES if var in env)
    for var in THREAD_VARIABLES:
        env.setdefault(var, str(cpus))
    threads = _positive(env.get("OMP_NUM_THREADS")) or cpus
    torch = sys.modules.get("torch")  # loaded already (a task module imported it): resize its pool now
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)
    return Applied(cpus, threads, user_set)
