"""Fixtures for tests that run workers in images: the local podman test image, the apptainer stand-in, and the
probe task that records what its worker sees inside."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "containers" / "test-image" / "build.sh"
IMAGE = "localhost/nestling-test:latest"


@pytest.fixture(scope="session")
def podman_env() -> dict[str, str]:
    """Build the test image once (build.sh is idempotent); the env carries CONTAINERS_CONF from build.sh.

    Without podman the test is skipped, or fails when CI is set (CI must exercise the real runtime).
    """
    if shutil.which("podman") is None:
        reason = "podman is not installed (apt-get install -y podman runc busybox-static)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"{BUILD} failed ({done.returncode}):\n{done.stderr}")
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("export CONTAINERS_CONF="), done.stdout
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = line.split("=", 1)[1]
    return env


PROBE_TASK = '''
"""A sleep task that records, in probe.json of its run dir, what the worker process sees."""
import hashlib
import json
import os

from nestling.tasks.sleep import SleepTask

SECRET = {secret!r}
KEYS = ("CUDA_VISIBLE_DEVICES", "NESTLING_PHYSICAL_GPUS", "NESTLING_IN_CONTAINER", "SLURM_JOB_GPUS",
        "SLURM_STEP_GPUS", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURMD_NODENAME", "PROBE_HOST_ONLY", "ODD",
        "HOME", "APPTAINER_CONTAINER", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class ProbeTask(SleepTask):
    def data_dirs(self):
        given = os.environ.get("PROBE_DATA_DIR")  # read where the CLI plans: the host
        return [given] if given else []

    def build_model(self, hparams):
        model = super().build_model(hparams)

        def on_fit_start():
            import torch

            info = {{key: os.environ.get(key) for key in KEYS}}
            info["threads"] = torch.get_num_threads()
            info["umask"] = os.umask(0o022)
            os.umask(info["umask"])
            info["secret_visible"] = os.path.exists(SECRET)
            info["cwd"] = os.getcwd()
            key = os.environ.get("WANDB_API_KEY")
            info["wandb_key_sha256"] = hashlib.sha256(key.encode()).hexdigest() if key else None
            info["files"] = {{}}
            for path in filter(None, os.environ.get("PROBE_FILES", "").split(":")):
                info["files"][path] = open(path).read() if os.path.isfile(path) else None
            with open(os.path.join(model.trainer.default_root_dir, "probe.json"), "w") as f:
                json.dump(info, f)

        model.on_fit_start = on_fit_start
        return model
'''


@pytest.fixture
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The probe task module in its own dir, and a host file nothing declares (must stay invisible)."""
    secret = tmp_path_factory.mktemp("undeclared") / "host-only.txt"
    secret.write_text("must not be visible inside the image")
    module_dir = tmp_path_factory.mktemp("probe task")
    (module_dir / "probe_task.py").write_text(PROBE_TASK.format(secret=str(secret)))
    return {"dir": str(module_dir), "secret": str(secret)}


@pytest.fixture
def apptainer_standin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The apptainer stand-in first on PATH (nestling/testing/fake_apptainer.py), a fake .sif whose `python` is
    this interpreter, the log of every call, and a node-local TMPDIR; returns the env and the paths."""
    from nestling.testing import fake_apptainer

    root = tmp_path_factory.mktemp("apptainer standin")
    fake_apptainer.install(root / "bin")
    (root / "node-local").mkdir()
    log = root / "apptainer.jsonl"
    env = {
        **os.environ,
        "PATH": f"{root / 'bin'}:{os.environ['PATH']}",
        fake_apptainer.LOG_ENV: str(log),
        "TMPDIR": str(root / "node-local"),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    image = fake_apptainer.make_image(root / "nestling.sif")
    return {"env": env, "image": str(image), "log": log, "scratch": root / "node-local"}
