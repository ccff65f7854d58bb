"""A real podman run of a wrapped command: isolation, GPU pinning env and odd paths, on the local test image.

The image is built by the `podman_env` fixture (tests/integration/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import nestling
from nestling.core.containers.binds import host_python_binds
from nestling.core.containers.options import ContainerOptions
from nestling.core.containers.runtimes import wrap_command

pytestmark = pytest.mark.container

IMAGE = "localhost/nestling-test:latest"
SRC = str(Path(nestling.__file__).resolve().parents[1])

SCRIPT = """
import json, os, sys
from nestling.core.containers.spec import in_container
out, secret = sys.argv[1], sys.argv[2]
info = {
    "in_container": in_container(),
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "physical_gpus": os.environ.get("NESTLING_PHYSICAL_GPUS"),
    "undeclared_exists": os.path.exists(secret),
    "cwd": os.getcwd(),
    "host_env_leaked": "NESTLING_TEST_HOST_ONLY" in os.environ,
}
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump(info, f)
"""


def test_wrapped_run_is_isolated_and_pinned(
    podman_env: dict[str, str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    artifacts = tmp_path / "art with space 'and\" quote"
    artifacts.mkdir()
    secret = tmp_path_factory.mktemp("undeclared") / "host-only.txt"
    secret.write_text("must not be visible")

    opts = ContainerOptions(image=IMAGE, runtime="podman", binds=tuple(host_python_binds()))
    argv = wrap_command(
        [sys.executable, "-c", SCRIPT, str(artifacts), str(secret)],
        opts,
        runtime="podman",
        gpus=["1"],
        auto_binds=[artifacts],
        env={"PYTHONPATH": SRC},
        workdir=artifacts,
    )
    env = {**podman_env, "NESTLING_TEST_HOST_ONLY": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"

    info = json.loads((artifacts / "result.json").read_text())
    assert info["in_container"] is True
    assert info["cuda_visible_devices"] == "1"
    assert info["physical_gpus"] == "1"
    assert info["undeclared_exists"] is False
    assert info["cwd"] == str(artifacts)
    assert info["host_env_leaked"] is False
