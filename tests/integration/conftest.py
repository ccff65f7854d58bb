"""Fixtures for tests that need a real container runtime: the local podman test image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import require

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "containers" / "test-image" / "build.sh"
IMAGE = "localhost/nestling-test:latest"


@pytest.fixture(scope="session")
def podman_env() -> dict[str, str]:
    """Build the test image once (build.sh is idempotent); the env carries CONTAINERS_CONF from build.sh.

    Without podman the test is skipped, or fails when CI is set (CI must exercise the real runtime).
    """
    require(shutil.which("podman") is not None, "podman", "apt-get install -y podman runc busybox-static")
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"{BUILD} failed ({done.returncode}):\n{done.stderr}")
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("export CONTAINERS_CONF="), done.stdout
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = line.split("=", 1)[1]
    return env
