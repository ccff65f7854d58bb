"""Shared fixtures: the real local SLURM clusters (slurm/local-cluster), started once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "slurm" / "local-cluster"


@contextmanager
def _cluster(*options: str) -> Iterator[str]:
    """Start a local cluster with these options, yield its SLURM_CONF, bring it down afterwards."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    if shutil.which("slurmctld", path=path) is None:
        reason = "SLURM is not installed (slurm/local-cluster install, or apt-get install -y slurm-wlm munge)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    state = [o for i, o in enumerate(options) if i and options[i - 1] == "--state-dir"]
    env = {**os.environ, **({"NESTLING_CLUSTER_DIR": state[0]} if state else {})}
    was_up = (
        subprocess.run([str(CLUSTER), "status"], capture_output=True, env=env, check=False).returncode == 0
    )
    done = subprocess.run(
        [str(CLUSTER), "up", *options], capture_output=True, text=True, timeout=180, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"slurm/local-cluster up {' '.join(options)} failed ({done.returncode}):\n{done.stderr}")
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("export SLURM_CONF="), done.stdout
    try:
        yield line.split("=", 1)[1]
    finally:
        if not was_up:  # leave a cluster somebody else started as it was
            subprocess.run([str(CLUSTER), "down", *options], capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """The default cluster (<repo>/.cluster, port $NESTLING_CLUSTER_PORT or 17000): 2 nodes x 2 fake GPUs x 4 CPUs. Sets SLURM_CONF."""
    with _cluster("--cpus-per-node", "4") as conf:
        os.environ["SLURM_CONF"] = conf
        yield conf


@pytest.fixture(scope="session")
def small_array_cluster() -> Iterator[dict[str, str]]:
    """A second cluster with MaxArraySize=4 (<repo>/.cluster-small, port 1000 above the default cluster's); yields an env for subprocesses."""
    port = str(int(os.environ.get("NESTLING_CLUSTER_PORT", "17000")) + 1000)  # beside the default cluster's
    options = ("--state-dir", str(REPO / ".cluster-small"), "--port", port, "--max-array-size", "4",
               "--cpus-per-node", "4")  # fmt: skip
    with _cluster(*options) as conf:
        yield {**os.environ, "SLURM_CONF": conf}
