"""Snapshots of what each launcher runs when an image is set (apptainer is not installable here, so its command
lines are pinned exactly), and of the container description the factory builds.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest

from nestling.commands.cli import main
from nestling.core.containers import binds as container_binds
from nestling.core.containers import oci, runtimes
from nestling.core.containers import spec as container
from nestling.core.containers.spec import ContainerSpec
from nestling.core.options.config import parse_config
from nestling.launch.factory import container_spec

WORKER = [sys.executable, "-m", "nestling.worker"]


def slurm_task_command(
    args: list[str], spec: ContainerSpec | None, environ: dict[str, str], interactive: bool = False
) -> list[str]:
    """What a SLURM task (array task, srun rank) starts: the worker in the image, GPUs from its environment."""
    assert spec is not None
    return spec.wrap([*WORKER, *args], environ=environ, interactive=interactive, job_task=True).argv


@pytest.fixture(autouse=True)
def _pretend_apptainer(monkeypatch: pytest.MonkeyPatch) -> None:
    """apptainer 1.3 'installed', root, no CDI spec, no SLURM controller: snapshots must not depend on the host."""
    monkeypatch.setattr(container, "resolve_runtime", lambda image, runtime, which=None: runtime)
    monkeypatch.setattr(container, "runtime_version", lambda name, run=None: f"{name} version 1.3.4")
    monkeypatch.setattr(runtimes, "host_user", lambda: (0, 0))
    monkeypatch.setattr(oci, "nvidia_cdi_present", lambda: False)
    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda n, *a, **k: None if n in ("sinfo", "scontrol", "squeue") else real(n, *a, **k)
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working dir with a .sif, a models dir to bind, and a relative artifact dir."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "n.sif").write_text("")
    (tmp_path / "models").mkdir()
    return tmp_path


def options(site: Path, runtime: str = "apptainer", image: str | None = None) -> list[str]:
    return [
        "--task", "sleep", "--n_folds", "3", "--n_seeds", "1", "--strategy", "cv-parallel", "--accelerator", "gpu",
        "--artifact_dir", "art", "--name", "snap",
        "--container_image", image or str(site / "n.sif"), "--container_runtime", runtime,
        "--container_bind", f"{site}/models:/models:ro", "--container_env", "WANDB_MODE=offline", "HF_HOME=/models",
    ]  # fmt: skip


def test_container_spec_binds_artifact_dir_and_task_data_dirs(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(options(site))
    spec = container_spec(config)
    assert spec == ContainerSpec(
        image=f"{site}/n.sif", runtime="apptainer", binds=(f"{site}/models:/models:ro",),
        env=("WANDB_MODE=offline", "HF_HOME=/models"), args="",
        auto_binds=(f"{site}/art:{site}/art",),
        python="python",  # the host interpreter is not bound in: the image's python runs the worker
        workdir=f"{site}/art",  # the submitting dir is not bound in; the artifact dir always is
        runtime_version="apptainer version 1.3.4",  # --no-eval: values arrive literally
        gpu=True,  # --accelerator gpu: the driver goes in even when no GPU id is known
    )  # fmt: skip

    class WithData:
        def data_dirs(self) -> list[str]:
            return [str(site / "models"), str(site / "art" / "cache")]

    (site / "art" / "cache").mkdir(parents=True)
    with_data = container_spec(config, WithData())
    assert with_data is not None and with_data.auto_binds == (f"{site}/art:{site}/art", f"{site}/models:{site}/models")
    with pytest.raises(Exception, match="does not exist"):
        container_spec(config, type("Missing", (), {"data_dirs": lambda self: ["/nonexistent/data"]})())
    assert container_spec(parse_config(["--task", "sleep"])) is None


def test_local_worker_apptainer_command(site: Path) -> None:
    spec = container_spec(parse_config(options(site)))
    assert spec is not None
    host_env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HOME": "/root", "CONTAINERS_CONF": "/x"}
    argv = spec.wrap([*WORKER, "--serve"], environ=host_env, gpus=["3"], interactive=True).argv
    assert argv == [
        "apptainer", "exec", "--contain", "--bind", "/dev", "--workdir", "/tmp/nestling-0", "--cleanenv",
        "--no-eval", "--nv",
        "--bind", f"{site}/art:{site}/art", "--bind", f"{site}/models:/models:ro",
        "--env", "WANDB_MODE=offline", "--env", "HF_HOME=/models",
        "--env", "OMP_NUM_THREADS=1", "--env", "PYTHONUNBUFFERED=1",
        "--env", "NESTLING_IN_CONTAINER=1", "--env", "CUDA_VISIBLE_DEVICES=3", "--env", "NESTLING_PHYSICAL_GPUS=3",
        "--pwd", f"{site}/art",  # the submitting dir is not bound: the worker starts in the artifact dir
        f"{site}/n.sif", "python", "-m", "nestling.worker", "--serve",
    ]  # fmt: skip


def test_local_worker_podman_command_keeps_stdin_and_host_python(site: Path) -> None:
    binds = ["--container_bind", *container_binds.host_python_binds()]
    spec = container_spec(parse_config([*options(site, "podman", "localhost/nestling-test:latest"), *binds]))
    assert spec is not None
    argv = spec.wrap([*WORKER, "--serve"], environ={}, gpus=None, interactive=True).argv
    assert argv[:7] == ["podman", "run", "--rm", "--init", "--ipc=host", "-i", "--security-opt"]
    assert argv[-5:] == ["localhost/nestling-test:latest", sys.executable, "-m", "nestling.worker", "--serve"]
    assert argv[argv.index("-w") + 1] == f"{site}/art"  # podman cannot start in a dir the image lacks
    assert not any(a.startswith("CUDA_VISIBLE_DEVICES") for a in argv)


SLURM_TASK_ENV = {
    "SLURM_JOB_ID": "101", "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "1", "SLURM_NTASKS": "1",
    "SLURMD_NODENAME": "gpu07", "SLURM_JOB_GPUS": "3", "SLURM_STEP_GPUS": "3",
    "CUDA_VISIBLE_DEVICES": "0",  # renumbered: SLURM constrains the task's devices with cgroups
    "SUBMITIT_EXECUTOR": "slurm", "HOME": "/home/me", "PATH": "/usr/bin", "WANDB_MODE": "offline",
}  # fmt: skip


def test_slurm_array_sbatch_script_and_apptainer_task_command(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "cv",
        *options(site),
        "--launcher",
        "slurm",
        "--dry_run",
        "--max_array_size",
        "2",
        "--partition",
        "gpu",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    script = (site / "art" / "_dry_run" / "snap" / "dry-run-array-0.sbatch").read_text()
    folder = f"{site}/art/_dry_run/snap"
    assert script == "\n".join([
        "#!/bin/bash",
        "",
        "# Parameters",
        "#SBATCH --array=0-1%2",
        "#SBATCH --cpus-per-task=2",
        f"#SBATCH --error={folder}/%A_%a_0_log.err",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --job-name=nestling-snap",
        "#SBATCH --mem=8192MB",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={folder}/%A_%a_0_log.out",
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --time=60",
        "#SBATCH --wckey=nestling",
        "",
        "# setup",
        "",
        "# command",
        "export SUBMITIT_EXECUTOR=slurm",
        f"srun --unbuffered --output {folder}/%A_%a_%t_log.out --error {folder}/%A_%a_%t_log.err "
        f"{sys.executable} -u -m nestling.array_task {folder}/units.json 0",
        "",
    ])  # fmt: skip
    second = (site / "art" / "_dry_run" / "snap" / "dry-run-array-1.sbatch").read_text()
    assert "#SBATCH --array" not in second  # one unit left: a plain job, as submitit submits it
    assert second.endswith(f"-m nestling.array_task {folder}/units.json 2\n")
    units = json.loads((site / "art" / "_dry_run" / "snap" / "units.json").read_text())
    assert [len(u) for u in units["units"]] == [1, 1, 1]
    assert units["container"]["runtime"] == "apptainer" and units["steal"] is True
    assert "3 runs in 3 array tasks, 2 array(s) of at most 2" in out

    # what array task 1 then starts on its node: one worker in the image, fed unit after unit on stdin
    spec = container_spec(parse_config(options(site)))
    assert slurm_task_command(["--serve"], spec, SLURM_TASK_ENV, interactive=True) == [
        "apptainer", "exec", "--contain", "--bind", "/dev", "--workdir", "/tmp/nestling-0", "--cleanenv",
        "--no-eval", "--nv",
        "--bind", f"{site}/art:{site}/art", "--bind", f"{site}/models:/models:ro",
        "--env", "WANDB_MODE=offline", "--env", "HF_HOME=/models",
        "--env", "SLURM_JOB_ID=101", "--env", "SLURM_ARRAY_JOB_ID=100", "--env", "SLURM_ARRAY_TASK_ID=1",
        "--env", "SLURM_NTASKS=1", "--env", "SLURMD_NODENAME=gpu07", "--env", "SLURM_JOB_GPUS=3",
        "--env", "SLURM_STEP_GPUS=3",
        # apptainer runs inside the task's cgroup: SLURM's (renumbered) CUDA_VISIBLE_DEVICES is the right one;
        # the physical id recorded is the node-level one SLURM granted (issue 26 #9)
        "--env", "NESTLING_IN_CONTAINER=1", "--env", "CUDA_VISIBLE_DEVICES=0", "--env", "NESTLING_PHYSICAL_GPUS=3",
        "--pwd", f"{site}/art",  # the submitting dir is not bound: the worker starts in the artifact dir
        f"{site}/n.sif", "python", "-m", "nestling.worker", "--serve",
    ]  # fmt: skip


def test_slurm_task_command_oci_uses_node_level_gpu_ids(site: Path) -> None:
    spec = container_spec(parse_config(options(site, "docker", "nestling:latest")))
    argv = slurm_task_command(["/r"], spec, SLURM_TASK_ENV)
    # docker's containers live outside the job's cgroup: select the node-level id SLURM granted
    assert argv[argv.index("--gpus") + 1] == "device=3"
    assert "CUDA_VISIBLE_DEVICES=0" in argv and "NESTLING_PHYSICAL_GPUS=3" in argv
    assert "--network" not in argv
    assert "HOME=/home/me" not in argv and "SUBMITIT_EXECUTOR=slurm" not in argv
    # no GRES (--accelerator cpu): no GPU flags at all
    cpu_env = {k: v for k, v in SLURM_TASK_ENV.items() if "GPU" not in k and k != "CUDA_VISIBLE_DEVICES"}
    cpu = container_spec(parse_config([*options(site, "docker", "nestling:latest"), "--accelerator", "cpu"]))
    argv = slurm_task_command(["/r"], cpu, cpu_env)
    assert "--gpus" not in argv and not any(a.startswith("CUDA_VISIBLE_DEVICES") for a in argv)
    # a GPU task whose GRES gave no ids (count-only): every GPU of the task, rather than none
    argv = slurm_task_command(["/r"], spec, cpu_env)
    assert argv[argv.index("--gpus") + 1] == "all"


def test_multi_task_jobs_get_the_host_network_on_oci(site: Path) -> None:
    """Multi-node DDP: every srun rank runs the image; ranks must reach MASTER_ADDR, so no private network."""
    env = {
        **SLURM_TASK_ENV,
        "SLURM_NTASKS": "4",
        "SLURM_PROCID": "2",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": "29500",
    }
    spec = container_spec(parse_config(options(site, "podman", "nestling:latest")))
    argv = slurm_task_command(["/r"], spec, env)
    assert argv[-7:-4] == ["--network", "host", "nestling:latest"]
    assert "SLURM_PROCID=2" in argv and "MASTER_ADDR=gpu07" in argv and "MASTER_PORT=29500" in argv
    own = container_spec(
        parse_config([*options(site, "podman", "nestling:latest"), "--container_args=--net=slirp4netns"])
    )
    assert "host" not in slurm_task_command(["/r"], own, env)
    apptainer = slurm_task_command(["/r"], container_spec(parse_config(options(site))), env)
    assert "--network" not in apptainer  # apptainer shares the host network already


def test_spec_round_trips_through_units_json_and_pickle(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    spec = container_spec(parse_config(options(site, "podman", "nestling:latest")))
    assert spec is not None
    assert ContainerSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec  # submitit-local pickles it with each job
    legacy = {  # units.json of a launch submitted by the previous version, still queued
        "options": {"image": spec.image, "runtime": "auto", "binds": list(spec.binds), "env": list(spec.env),
                    "args": spec.args},
        "runtime": spec.runtime, "auto_binds": list(spec.auto_binds), "env": {}, "python": spec.python,
        "workdir": spec.workdir,
    }  # fmt: skip
    # the older shapes knew neither `gpu` nor the version: a queued launch runs as it was planned then
    assert ContainerSpec.from_json(legacy) == dataclasses.replace(spec, gpu=False)
    # what an array task reads back from the launch's units.json is the spec the submitting host built
    assert main(["cv", *options(site), "--launcher", "slurm", "--dry_run"]) == 0
    units = json.loads((site / "art" / "_dry_run" / "snap" / "units.json").read_text())
    assert ContainerSpec.from_json(units["container"]) == container_spec(parse_config(options(site)))


def test_task_is_loaded_once_per_command(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container spec binds the data dirs of the task preflight loaded; it does not load it again."""
    import nestling.core.ml.task
    import nestling.plan.preflight

    loads: list[str] = []
    real = nestling.core.ml.task.load_task

    def counting(spec: str) -> object:
        loads.append(spec)
        return real(spec)

    monkeypatch.setattr(nestling.core.ml.task, "load_task", counting)
    monkeypatch.setattr(nestling.plan.preflight, "load_task", counting)
    assert main(["cv", *options(site), "--launcher", "slurm", "--dry_run"]) == 0
    assert loads == ["sleep"]


def test_worker_starts_in_a_bound_dir_and_gets_absolute_run_dirs(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 #10: from a directory under no bind, podman refused `-w <cwd>` (exit 126, every run lost)."""
    from nestling.plan.preflight import prepare

    # the submitting dir is bound at the same path: start there (a task module in it stays importable)
    bound = container_spec(parse_config([*options(site, "podman", "nestling:latest"), "--container_bind", str(site)]))
    assert bound is not None and bound.workdir == str(site)
    under = site / "models"
    monkeypatch.chdir(under)  # inside the bind site/models:/models, which is not at the same path
    spec = container_spec(parse_config(options(site, "podman", "nestling:latest")))
    assert spec is not None and spec.workdir == f"{under}/art"
    argv = spec.wrap([*WORKER, "--serve"], environ={}, interactive=True).argv
    workdir = argv[argv.index("-w") + 1]
    assert f"{workdir}:{workdir}" in spec.auto_binds and f"{workdir}:{workdir}" in argv

    # every path a worker reads is absolute, so it means the same from the bound dir it starts in
    prepared = prepare(parse_config(options(site)), "cv")
    assert prepared.plan.root.is_absolute()  # specs hold paths relative to it (a tree can move)
    for run in prepared.plan.runs:
        assert run.dir.is_absolute() and str(run.dir).startswith(f"{under}/art/"), run
