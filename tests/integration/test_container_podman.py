"""Real podman runs: a wrapped command (isolation, GPU pinning env, odd paths), and a whole cv whose worker command
lines are sampled from /proc while it runs (secrets by name, relative and symlinked binds; issue 26 #6, #8).

The image is built by the `podman_env` fixture (tests/integration/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import nestling
from nestling.core.containers.binds import host_python_binds
from nestling.core.containers.spec import ContainerSpec

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

    spec = ContainerSpec(image=IMAGE, runtime="podman", binds=tuple(host_python_binds()),
                         auto_binds=(str(artifacts),), env=(f"PYTHONPATH={SRC}",), workdir=str(artifacts),
                         python=sys.executable)  # fmt: skip
    wrapped = spec.wrap([sys.executable, "-c", SCRIPT, str(artifacts), str(secret)], environ={}, gpus=["1"])
    argv = wrapped.argv
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


SECRET = "fake-wandb-key-podman-0123456789"


class CmdlineSampler(threading.Thread):
    """Reads every process's command line (/proc/*/cmdline) until stopped: what `ps` on the node shows."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for path in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.seen.add(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    continue
            time.sleep(0.02)


def test_secrets_stay_out_of_every_command_line_and_binds_are_what_the_user_named(
    podman_env: dict[str, str], probe: dict[str, str], tmp_path: Path
) -> None:
    """A cv in podman with `--container_env WANDB_API_KEY` (by name), a relative `--container_bind reldata:/data`
    and a task whose data dir is a symlink: the key reaches the workers and no process's command line ever holds
    it (measured before: 3 processes did); the relative source is bound, no empty named volume `reldata` made;
    the task's own (symlinked) path exists inside."""
    (tmp_path / "reldata").mkdir()
    (tmp_path / "reldata" / "hello.txt").write_text("from a relative bind")
    real = tmp_path / "scratch" / "dataset"
    real.mkdir(parents=True)
    (real / "part-0.txt").write_text("through the symlink")
    (tmp_path / "data").symlink_to(real)
    given = tmp_path / "data"
    argv = [
        sys.executable, "-m", "nestling.cli", "cv", "--task", "probe_task:ProbeTask", "--hp", "sleep_s=0.5",
        "--n_folds", "2", "--n_seeds", "1", "--max_epochs", "1", "--strategy", "cv-parallel", "--devices", "2",
        "--accelerator", "cpu", "--launcher", "local", "--artifact_dir", "art", "--name", "sec", "--quiet",
        "--container_image", IMAGE, "--container_runtime", "podman",
        "--container_bind", *host_python_binds(), f"{probe['dir']}:{probe['dir']}:ro", "reldata:/data:ro",
        "--container_env", f"PYTHONPATH={probe['dir']}", "WANDB_API_KEY",
        f"PROBE_FILES=/data/hello.txt:{given}/part-0.txt",
    ]  # fmt: skip
    env = {**podman_env, "PYTHONPATH": probe["dir"], "WANDB_MODE": "offline", "WANDB_API_KEY": SECRET,
           "PROBE_DATA_DIR": str(given)}  # fmt: skip
    subprocess.run(["podman", "volume", "rm", "-f", "reldata"], env=podman_env, capture_output=True, check=False)
    sampler = CmdlineSampler()
    sampler.start()
    try:
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    finally:
        sampler.stop.set()
        sampler.join()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

    # this cv's own: the sampler reads every process, and the other xdist worker may run podman for another test
    podman_lines = [c for c in sampler.seen if c.startswith("podman run") and str(tmp_path) in c]
    assert podman_lines, "the sampler saw no podman command line: it sampled nothing useful"
    assert all("-e WANDB_API_KEY " in c for c in podman_lines), podman_lines  # named, so the worker gets it
    assert not [c for c in sampler.seen if SECRET in c]
    for path in sorted((tmp_path / "art").rglob("probe.json")):
        seen = json.loads(path.read_text())
        assert seen["wandb_key_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()
        assert seen["files"] == {"/data/hello.txt": "from a relative bind", f"{given}/part-0.txt": "through the symlink"}
    assert len(list((tmp_path / "art").rglob("probe.json"))) == 2
    volumes = subprocess.run(["podman", "volume", "ls", "--format", "{{.Name}}"], env=podman_env,
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert "reldata" not in volumes
    for path in (tmp_path / "art").rglob("*"):  # nothing nestling wrote holds the key
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
