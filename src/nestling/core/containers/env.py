"""What environment a worker takes into its image, and how: literal values on the command line, secrets by name.

Runtimes start the image with a clean environment (apptainer ``--cleanenv``, docker/podman only their ``-e``), so
every variable a worker needs is named here. Three kinds:

- PASSTHROUGH: the host variables every worker takes, as patterns. SLURM's job description (Lightning's
  SLURMEnvironment, the result record), the DDP rendezvous, and what clusters configure their fabric with: NCCL
  (``NCCL_SOCKET_IFNAME``, ``NCCL_IB_HCA``: without them a rendezvous can pick the wrong interface and hang), UCX and
  libfabric (``UCX_*``, ``FI_*``), gloo's interface, ``CUDA_DEVICE_ORDER``; W&B's mode and server; the CPU
  budget, thread counts and umask a launcher chose (core/host/worker_limits.py). ``--container_env_pass
  PATTERN`` adds patterns.
- HOST_DIRS: variables that name a host cache directory (torch, Hugging Face, Triton, XDG). They are passed only
  together with a bind of that directory at the same path, and only where it exists: a variable pointing to a
  directory missing in the image is worse than none (a pre-filled cache on an offline node would stay invisible,
  a fresh one would fail to be created in a read-only image). ``TMPDIR`` is not one of them: it is where the
  runtime's node-local scratch goes (runtimes.node_scratch), and inside ``/tmp`` already lies there (apptainer)
  or on the container's own disk (docker, podman); binding it would show the whole host ``/tmp`` when SLURM
  sets ``TMPDIR=/tmp``.
- Secrets (``is_secret_name``: API keys, tokens, passwords): never written into a command line, a file or a
  printout. A runtime gets them by name: docker/podman ``-e KEY`` with the value in the runtime process's own
  environment, apptainer ``APPTAINERENV_KEY`` (``SINGULARITYENV_KEY``) in its environment. ``ps`` on the node shows
  the name only.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from nestling.core.host import worker_limits

PASSTHROUGH = (
    "SLURM*",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WANDB_MODE",
    "WANDB_BASE_URL",
    *worker_limits.WORKER_VARIABLES,  # the worker's CPU budget, its thread variables and the launcher's umask
    "PYTHONUNBUFFERED",
    "NESTLING_MEMORY_FRACTION",  # --runs_per_gpu: each packed worker's share of the GPU's memory
    "NESTLING_PINNED_GPUS",  # a serial worker pinned to --devices ids: execute/training.py renumbers them
    "NCCL_*",
    "TORCH_NCCL_*",
    "GLOO_SOCKET_IFNAME",
    "UCX_*",
    "FI_*",
    "CUDA_DEVICE_ORDER",
)
HOST_DIRS = ("XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME", "TRITON_CACHE_DIR")
_SECRET = re.compile(r"(^|_)(API_?KEY|ACCESS_KEY|PRIVATE_KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?)(_|$)")


def is_secret_name(key: str) -> bool:
    """Whether a variable holds a credential (WANDB_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, ...)."""
    return bool(_SECRET.search(key.upper()))


def matches(key: str, patterns: Sequence[str]) -> bool:
    """Whether ``key`` matches one of ``patterns`` (names or globs, case-sensitive as the environment is)."""
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


@dataclass
class EnvPlan:
    """The environment one worker gets: ``literal`` values go on the runtime's command line; the values of
    ``by_name`` reach the runtime through its own environment only; ``dirs`` are the host directories HOST_DIRS
    name, as (resolved source, path as named), to bind read-write."""

    literal: dict[str, str] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)
    dirs: list[tuple[str, str]] = field(default_factory=list)

    def set(self, key: str, value: str, secret: bool = False) -> None:
        """Set ``key`` (a later call wins); a secret, or any value of a secret-named key, goes by name."""
        self.literal.pop(key, None)
        self.by_name.pop(key, None)
        (self.by_name if secret or is_secret_name(key) else self.literal)[key] = value

    def names(self) -> list[str]:
        return [*self.literal, *self.by_name]


def plan_env(
    environ: Mapping[str, str],
    items: Sequence[tuple[str, str | None]],
    extra_patterns: Sequence[str] = (),
    is_dir: Callable[[str], bool] = os.path.isdir,
) -> EnvPlan:
    """The environment a worker started from ``environ`` takes into its image.

    The user's ``--container_env`` ``items`` (key, value) come first and win; an item without a value takes the
    host's value by name (skipped when the host has none). Then the host variables matching PASSTHROUGH or
    ``extra_patterns``, then HOST_DIRS whose directory exists (``is_dir``).
    """
    user = {key for key, _ in items}
    plan = EnvPlan()
    for key, item in items:
        if item is not None:
            plan.set(key, item)
        elif key in environ:
            plan.set(key, environ[key], secret=True)
    patterns = (*PASSTHROUGH, *extra_patterns)
    for key, value in environ.items():
        if key in user or key in HOST_DIRS or not matches(key, patterns):
            continue
        plan.set(key, value)
    for key in HOST_DIRS:
        path = environ.get(key, "")
        if key in user or not os.path.isabs(path) or not is_dir(path):
            continue
        plan.set(key, path)
        plan.dirs.append((os.path.realpath(path), os.path.normpath(path)))
    return plan
