"""Whole plans through `--container_image X.sif` with the apptainer stand-in on PATH (no apptainer package exists for
these machines; nestling/testing/fake_apptainer.py reads each command line as apptainer does, records it, and runs
the worker on the host): the local pool, SLURM array tasks, and the ranks of a multi-node run. Each run's probe
(tests/integration/conftest.py) records what the worker saw; the stand-in's log records what apptainer would have
mounted and injected for every worker it started.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.container

ODD = "a$HOME `x` \"q\",b=c\\"  # shell, CSV and pflag specials, and a trailing backslash (issue 26 #3)
SECRET = "fake-wandb-key-0123456789"


def run_cli(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> None:
    done = subprocess.run([sys.executable, "-m", "nestling.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def base_argv(standin: dict[str, Any], probe: dict[str, str], *extra: str, image: str | None = None) -> list[str]:
    return [
        "--task", "probe_task:ProbeTask", "--hp", "sleep_s=0.2", "--max_epochs", "1", "--artifact_dir", "art",
        "--name", "boxed", "--quiet", "--container_image", image or standin["image"],
        "--container_bind", f"{probe['dir']}:ro",
        "--container_env", f"PYTHONPATH={probe['dir']}", f"ODD={ODD}", "WANDB_API_KEY",
        *extra,
    ]  # fmt: skip


def env_for(standin: dict[str, Any], probe: dict[str, str], **more: str) -> dict[str, str]:
    return {**standin["env"], "PYTHONPATH": probe["dir"], "PROBE_HOST_ONLY": "1", "WANDB_MODE": "offline",
            "WANDB_API_KEY": SECRET, **more}  # fmt: skip


def calls(standin: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(standin["log"]).read_text().splitlines()]


def workers(standin: dict[str, Any]) -> list[dict[str, Any]]:
    """The stand-in's record of every worker it started (not the launch's one-off probe of the image)."""
    return [c for c in calls(standin) if c.get("cmd", [None, None])[1:3] == ["-m", "nestling.worker"]]


def probes(root: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for path in sorted(root.rglob("run_result.json")):
        result = json.loads(path.read_text())
        assert result["status"] == "success", result
        out.append((result, json.loads((path.parent / "probe.json").read_text())))
    return out


def assert_apptainer_did_right(
    standin: dict[str, Any], pairs: list[tuple[dict, dict]], started: int, image: str | None = None
) -> None:
    """What every worker saw, and what apptainer would have done for each one it started."""
    assert pairs
    for result, seen in pairs:
        assert result["in_container"] is True and seen["NESTLING_IN_CONTAINER"] == "1"
        assert seen["ODD"] == ODD  # literally, through --env
        assert seen["wandb_key_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()  # by name, arrived
        assert seen["PROBE_HOST_ONLY"] is None  # --cleanenv (files: the stand-in has no mount namespace)
        assert seen["APPTAINER_CONTAINER"] == (image or standin["image"])
    started_workers = workers(standin)
    assert len(started_workers) == started
    for call in started_workers:
        assert {"--cleanenv", "--contain", "--no-eval"} <= set(call["flags"])
        assert call["mounts"]["/dev/shm"] == "host"  # NCCL's P2P and SHM between ranks (issue 26 #1)
        assert call["mounts"]["$HOME"].startswith(str(standin["scratch"]))  # node-local disk (issue 26 #2)
        assert call["env_by_name"] == ["WANDB_API_KEY"]
        assert SECRET not in json.dumps(call)  # not in its argv, nor anywhere apptainer would show it
    (probe_call,) = [c for c in calls(standin) if c.get("cmd", [None, None])[1] == "-c"]
    assert probe_call["cmd"][0] == "python"  # the launch ran the image once for its interpreter


def test_local_pool_cv_through_apptainer_from_a_uri(
    apptainer_standin: dict[str, Any], probe: dict[str, str], tmp_path: Path
) -> None:
    """The image given as a docker:// URI: pulled once before the plan is written, every worker runs the .sif."""
    env = env_for(apptainer_standin, probe, CUDA_VISIBLE_DEVICES="3,5")
    uri = "docker://registry.example.org/me/nestling:0.2"
    argv = ["cv", *base_argv(apptainer_standin, probe, image=uri), "--n_folds", "2", "--n_seeds", "1",
            "--strategy", "cv-parallel", "--devices", "2", "--launcher", "local"]  # fmt: skip
    run_cli(argv, tmp_path, env)
    pairs = probes(tmp_path / "art" / "_cross_validations" / "boxed")
    assert len(pairs) == 2
    (sif,) = (tmp_path / "art" / "_images").glob("*.sif")
    assert [c["pull"] for c in calls(apptainer_standin) if "pull" in c] == [uri]
    assert_apptainer_did_right(apptainer_standin, pairs, started=2, image=str(sif))
    # each worker got its slot's GPU: --nv and the id, as the local pool pinned it
    assert sorted(seen["CUDA_VISIBLE_DEVICES"] for _, seen in pairs) == ["3", "5"]
    assert all(seen["NESTLING_PHYSICAL_GPUS"] == seen["CUDA_VISIBLE_DEVICES"] for _, seen in pairs)
    assert all("--nv" in call["flags"] for call in workers(apptainer_standin))


@pytest.mark.cluster
def test_slurm_array_cv_through_apptainer(
    apptainer_standin: dict[str, Any], probe: dict[str, str], slurm_cluster: str, tmp_path: Path
) -> None:
    env = env_for(apptainer_standin, probe, SLURM_CONF=slurm_cluster)
    argv = ["cv", *base_argv(apptainer_standin, probe), "--n_folds", "2", "--n_seeds", "1",
            "--strategy", "cv-parallel", "--launcher", "slurm", "--accelerator", "cpu", "--gpus_per_task", "1",
            "--cpus_per_task", "1", "--mem_gb", "1", "--nosteal", "--wait"]  # fmt: skip
    run_cli(argv, tmp_path, env)
    pairs = probes(tmp_path / "art" / "_cross_validations" / "boxed")
    assert len(pairs) == 2
    assert_apptainer_did_right(apptainer_standin, pairs, started=2)
    for result, seen in pairs:
        assert result["slurm_array_task_id"] in ("0", "1")
        granted = seen["SLURM_STEP_GPUS"] or seen["SLURM_JOB_GPUS"]
        assert seen["NESTLING_PHYSICAL_GPUS"] == granted  # the node-level id SLURM granted (issue 26 #9)
        assert seen["CUDA_VISIBLE_DEVICES"] is not None


@pytest.mark.cluster
def test_multi_node_ranks_through_apptainer(
    apptainer_standin: dict[str, Any], probe: dict[str, str], slurm_cluster: str, tmp_path: Path
) -> None:
    env = env_for(apptainer_standin, probe, SLURM_CONF=slurm_cluster)
    argv = ["run", *base_argv(apptainer_standin, probe), "--launcher", "slurm", "--num_nodes", "2",
            "--devices", "1", "--strategy", "ddp", "--accelerator", "cpu", "--cpus_per_task", "1",
            "--mem_gb", "1", "--wait"]  # fmt: skip
    run_cli(argv, tmp_path, env)
    (run_dir,) = (tmp_path / "art" / "_runs").iterdir()
    result = json.loads((run_dir / "run_result.json").read_text())
    assert result["status"] == "success" and result["world_size"] == 2, result
    assert_apptainer_did_right(apptainer_standin, probes(run_dir), started=2)
    ranks = sorted(c["env"]["SLURM_PROCID"] for c in workers(apptainer_standin))
    assert ranks == ["0", "1"]  # every srun rank started its worker through apptainer, with its rank
    assert {c["env"]["SLURM_NTASKS"] for c in workers(apptainer_standin)} == {"2"}
