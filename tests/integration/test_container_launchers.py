"""A cv-parallel through the CLI, every worker inside the podman test image: local launcher and SLURM arrays.

The test image (containers/test-image) runs the host's python when the interpreter, the venv and the system
library dirs are bound read-only; the tests declare those binds with --container_bind, as a user would for a
"bring your own python" image. The task is a sleep task from a module in a tmp dir (bound + PYTHONPATH) that writes
what its worker sees into probe.json in its run dir: GPU variables, and whether an undeclared host file exists.
The artifact dir holds a space and both quote characters and is relative to the working directory.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nestling.core.containers.binds import host_python_binds
from nestling.core.host import worker_limits
from nestling.core.host.worker_limits import THREAD_VARIABLES

pytestmark = pytest.mark.container

IMAGE = "localhost/nestling-test:latest"
ART = "art with space 'and\" quote"

def cv_argv(probe: dict[str, str], *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "nestling.cli", "cv",
        "--task", "probe_task:ProbeTask", "--hp", "sleep_s=0.5", "--n_folds", "2", "--n_seeds", "1",
        "--max_epochs", "1", "--strategy", "cv-parallel", "--artifact_dir", ART, "--name", "boxed", "--quiet",
        "--container_image", IMAGE, "--container_runtime", "podman",
        "--container_bind", *host_python_binds(), f"{probe['dir']}:{probe['dir']}:ro",
        "--container_env", f"PYTHONPATH={probe['dir']}",
        *extra,
    ]  # fmt: skip


def run_cli(argv: list[str], cwd: Path, env: dict[str, str], probe: dict[str, str], timeout: float) -> None:
    """Under umask 027, without thread variables: what the image's worker gets comes from its launcher."""
    env = {**env, "PYTHONPATH": probe["dir"], "PROBE_HOST_ONLY": "1", "WANDB_MODE": "offline"}
    env = {k: v for k, v in env.items() if k not in THREAD_VARIABLES}
    previous = os.umask(0o027)
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        os.umask(previous)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def results(cv_dir: Path) -> list[tuple[dict, dict]]:
    """(run_result.json, probe.json) per run, read on the host: both were written through the bind."""
    out = []
    for path in sorted(cv_dir.glob("*/run_result.json")):
        result = json.loads(path.read_text())
        assert result["status"] == "success", result
        out.append((result, json.loads((path.parent / "probe.json").read_text())))
    return out


def assert_contained(pairs: list[tuple[dict, dict]], cwd: Path) -> None:
    assert len(pairs) == 2
    written = (cwd / ART / "_cross_validations" / "boxed").glob("*/run_result.json")  # by the workers in the image
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in written] == ["0o640", "0o640"]
    for result, seen in pairs:
        assert result["in_container"] is True
        assert seen["NESTLING_IN_CONTAINER"] == "1"
        assert seen["secret_visible"] is False  # an undeclared host path is not visible
        assert seen["PROBE_HOST_ONLY"] is None  # nor is the host environment
        # the submitting directory is bound nowhere, so the worker starts in the (always bound) artifact dir;
        # every path it reads is absolute (issue 12 #10)
        assert seen["cwd"] == str((cwd / ART).resolve())
        assert result["cuda_visible_devices"] == seen["CUDA_VISIBLE_DEVICES"]
        assert seen["umask"] == 0o027  # the user's, not the runtime's 0022 (issue 21 #3)
        # threads follow the worker's CPUs (issue 21 #2): torch's and the variables the user left unset
        assert (seen["OMP_NUM_THREADS"], seen["MKL_NUM_THREADS"]) == (str(seen["threads"]),) * 2


def test_local_pool_runs_each_worker_in_the_image_pinned(
    podman_env: dict[str, str], probe: dict[str, str], tmp_path: Path
) -> None:
    # Two fake GPU ids: the pool starts one worker per id. torch finds no GPU (CPU wheel, no device), so
    # --accelerator auto trains on CPU while the pinning is still observable inside the container.
    env = {**podman_env, "CUDA_VISIBLE_DEVICES": "3,5"}
    run_cli(
        cv_argv(probe, "--launcher", "local", "--accelerator", "auto", "--devices", "2"),
        tmp_path,
        env,
        probe,
        300,
    )

    cv_dir = tmp_path / ART / "_cross_validations" / "boxed"
    pairs = results(cv_dir)
    assert_contained(pairs, tmp_path)
    # each worker saw exactly its own GPU: one id each, distinct, physical ids (podman without a CDI spec)
    assert sorted(r["cuda_visible_devices"] for r, _ in pairs) == ["3", "5"]
    assert [s["threads"] for _, s in pairs] == [worker_limits.share(2)] * 2  # two workers share this machine
    assert all(s["NESTLING_PHYSICAL_GPUS"] == r["cuda_visible_devices"] for r, s in pairs)
    assert (cv_dir / "run_infos.parquet").is_file()
    assert list(cv_dir.rglob("worker-*.log")), "worker logs are written on the host"


@pytest.mark.cluster
def test_slurm_array_tasks_run_in_the_image_with_their_gres(
    podman_env: dict[str, str], slurm_cluster: str, probe: dict[str, str], tmp_path: Path
) -> None:
    # sbatch passes the submitting environment (CONTAINERS_CONF, PYTHONPATH) to each array task; submitit then
    # starts podman there with the GPU SLURM gave the task.
    env = {**podman_env, "SLURM_CONF": slurm_cluster}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    argv = cv_argv(probe, "--launcher", "slurm", "--accelerator", "cpu", "--gpus_per_task", "1",
                   "--cpus_per_task", "1", "--mem_gb", "1", "--wait")  # fmt: skip
    run_cli(argv, tmp_path, env, probe, 300)

    cv_dir = tmp_path / ART / "_cross_validations" / "boxed"
    pairs = results(cv_dir)
    assert_contained(pairs, tmp_path)
    for result, seen in pairs:
        assert result["slurm_job_id"] and result["slurm_array_task_id"] in ("0", "1")
        granted = seen["SLURM_STEP_GPUS"] or seen["SLURM_JOB_GPUS"]
        assert granted and len(granted.split(",")) == 1, seen
        assert result["cuda_visible_devices"] == granted  # exactly the GPU SLURM gave this task
        assert result["host"] == seen["SLURMD_NODENAME"]
        assert seen["threads"] == 1  # --cpus_per_task 1
    (a, _), (b, _) = pairs
    overlap = (
        a["host"] == b["host"] and a["started_at"] <= b["finished_at"] and b["started_at"] <= a["finished_at"]
    )
    if overlap:  # two tasks at once on one node hold different GPUs
        assert a["cuda_visible_devices"] != b["cuda_visible_devices"]
    assert (cv_dir / "run_infos.parquet").is_file()
    assert list(cv_dir.glob("_submitit/*")), "submitit wrote its logs under the odd path"
