"""`nestling doctor` against the real SLURM cluster and the real podman the suite starts (tests/unit/commands/
test_doctor.py covers every row with recorded answers; here the answers are the tools' own)."""

from __future__ import annotations

import os
from pathlib import Path

from support import cli

from nestling.core.containers.binds import host_python_binds

IMAGE = "localhost/nestling-test:latest"  # built by the podman_env fixture
SLEEP = ["doctor", "--task", "sleep", "--accelerator", "cpu", "--n_folds", "5", "--n_seeds", "1"]


def rows(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(name + " ")]


def test_doctor_reads_the_real_cluster(slurm_cluster: str, tmp_path: Path) -> None:
    argv = [*SLEEP, "--artifact_dir", str(tmp_path / "art"), "--strategy", "cv-parallel", "--launcher", "slurm"]
    done = cli(*argv, "--gpus_per_task", "1", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert " ok " in rows(out, "sinfo")[0] and "debug* (gpu:2)" in rows(out, "sinfo")[0], out
    assert " ok " in rows(out, "squeue")[0] and "job(s) queued" in rows(out, "squeue")[0], out
    assert "1001: at most 1001 tasks per array; this cv submits 1 array(s) for up to 5 unit(s)" in out
    assert " ok " in rows(out, "partition/GRES")[0] and "gpu:1 per task" in rows(out, "partition/GRES")[0], out
    too_many = cli(*argv, "--gpus_per_task", "3", timeout=120)
    assert too_many.returncode == 1, too_many.stdout + too_many.stderr
    assert " problem " in rows(too_many.stdout, "partition/GRES")[0]
    assert "exceeds the 2 GPUs per node of partition 'debug'" in too_many.stdout
    assert not (tmp_path / "art").exists()  # doctor checks, it writes nothing


def test_doctor_reads_the_real_podman(podman_env: dict[str, str], tmp_path: Path) -> None:
    # the test image is busybox only: the workers run the host's interpreter, bound in (as the podman tests do)
    argv = [*SLEEP, "--artifact_dir", str(tmp_path), "--container_runtime", "podman",
            "--container_bind", *host_python_binds()]  # fmt: skip
    env = {k: v for k, v in podman_env.items() if k != "SLURM_CONF"}
    done = cli(*argv, "--container_image", IMAGE, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    runtime = rows(done.stdout, "container runtime")[0]
    assert " ok " in runtime and "podman version " in runtime, done.stdout
    assert " ok " in rows(done.stdout, "container image")[0], done.stdout
    missing = cli(*argv, "--container_image", "localhost/nestling-no-such-image:1", env=env, timeout=120)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert " problem " in rows(missing.stdout, "container image")[0]
    assert "fix: podman pull localhost/nestling-no-such-image:1" in missing.stdout
    assert os.listdir(tmp_path) == []
