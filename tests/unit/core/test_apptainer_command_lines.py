"""What apptainer does with the command lines nestling builds, through the stand-in that reads them as apptainer
does (nestling/testing/fake_apptainer.py: pflag's --env parsing, the env script a real shell sources, the mounts
of container_linux.go). Each test also shows the stand-in catching the defect it guards against, so none can pass
by accident. No training here: the whole-cv runs through the stand-in are in tests/integration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nestling.core.containers import image
from nestling.core.containers.spec import ContainerSpec
from nestling.core.tree import naming
from nestling.testing import fake_apptainer

SHOW_ENV = "import json, os, sys; print(json.dumps({k: os.environ.get(k) for k in sys.argv[1:]}))"
ODD = {
    "DOLLAR": "abc$HOME",  # expanded by the shell apptainer sources --env values with (issue 26 #3)
    "BACKSLASH_END": "C:\\dir\\",  # a trailing backslash broke the start
    "TICKS": "`id` $(id)",
    "QUOTE_END": 'say "hi"',  # pflag trims a final quote: goes through APPTAINERENV_ instead
    "CSV": 'a=1,b="2"',  # another '=': one CSV record for pflag
    "NEWLINE": "line1\nline2",
    "SINGLE": "it's",
}


@pytest.fixture
def standin(tmp_path: Path) -> dict[str, Any]:
    """The stand-in as `apptainer` and `singularity` on PATH, a fake .sif, an artifact dir, a log."""
    bin_dir = tmp_path / "bin"
    fake_apptainer.install(bin_dir, "apptainer")
    fake_apptainer.install(bin_dir, "singularity")
    art = tmp_path / "art"
    art.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        fake_apptainer.LOG_ENV: str(tmp_path / "apptainer.jsonl"),
        "TMPDIR": str(tmp_path / "node-local"),
    }
    (tmp_path / "node-local").mkdir()
    return {"env": env, "image": fake_apptainer.make_image(tmp_path / "n.sif"), "art": art, "tmp": tmp_path}


def log(s: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(s["env"][fake_apptainer.LOG_ENV])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def spec(s: dict[str, Any], **kw: Any) -> ContainerSpec:
    fields: dict[str, Any] = {"image": str(s["image"]), "runtime": "apptainer", "auto_binds": (f"{s['art']}",),
                              "workdir": str(s["art"]), "runtime_version": "apptainer version 1.3.4"}  # fmt: skip
    fields.update(kw)
    return ContainerSpec(**fields)


def run_in(s: dict[str, Any], sp: ContainerSpec, keys: list[str], env: dict[str, str] | None = None, **kw: Any
           ) -> tuple[subprocess.CompletedProcess[str], list[str]]:  # fmt: skip
    environ = {**s["env"], **(env or {})}
    if "version" in kw:
        environ[fake_apptainer.VERSION_ENV] = kw.pop("version")
    wrapped = sp.wrap([sys.executable, "-c", SHOW_ENV, *keys], environ=environ, **kw)
    wrapped.prepare()
    done = subprocess.run(wrapped.argv, env=wrapped.env, capture_output=True, text=True, timeout=60, check=False)
    return done, wrapped.argv


@pytest.mark.parametrize(
    "version",
    ["apptainer version 1.3.4", "apptainer version 1.0.3", "singularity-ce version 3.9.9",
     "singularity version 3.8.7-1.el7"],
)  # fmt: skip
def test_env_values_arrive_literally_on_every_version(standin: dict[str, Any], version: str) -> None:
    """--no-eval where the runtime has it, values escaped for its shell where not: the same literal values."""
    runtime = "singularity" if version.startswith("singularity") else "apptainer"
    env_items = tuple(f"{k}={v}" for k, v in ODD.items())
    done, argv = run_in(standin, spec(standin, runtime=runtime, env=env_items, runtime_version=version),
                        list(ODD), version=version)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ODD
    (entry,) = log(standin)
    has_no_eval = version == "apptainer version 1.3.4"  # the others predate it (1.1, CE 3.10)
    assert entry["no_eval"] is has_no_eval and ("--no-eval" in argv) is has_no_eval
    assert entry["env_by_name"] == ["QUOTE_END"]  # the one value --env cannot carry went by the environment


def test_the_stand_in_evaluates_as_apptainer_does(standin: dict[str, Any]) -> None:
    """The control: an unescaped value on a runtime without --no-eval is changed, --no-eval is refused there,
    and a trailing backslash breaks the start, as issue 26 #3 describes."""
    env = {**standin["env"], fake_apptainer.VERSION_ENV: "apptainer version 1.0.3"}
    base = ["apptainer", "exec", "--cleanenv", str(standin["image"]), "python", "-c", SHOW_ENV, "V"]
    done = subprocess.run([*base[:3], "--env", "V=abc$HOME", *base[3:]], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and json.loads(done.stdout)["V"] != "abc$HOME"
    done = subprocess.run([*base[:3], "--env", "V=end\\", *base[3:]], env=env, capture_output=True, text=True)
    assert done.returncode == 255 and "while sourcing the environment" in done.stderr
    done = subprocess.run([*base[:3], "--no-eval", *base[3:]], env=env, capture_output=True, text=True)
    assert done.returncode == 255 and "unknown flag: --no-eval" in done.stderr


def test_host_dev_and_node_local_scratch(standin: dict[str, Any]) -> None:
    """Issue 26 #1, #2: /dev/shm is the host's (NCCL's P2P and SHM between ranks), /tmp, /var/tmp and $HOME live
    under --workdir on node-local disk ($TMPDIR), not in the 64 MiB session tmpfs."""
    done, argv = run_in(standin, spec(standin), ["HOME"])
    assert done.returncode == 0, done.stderr
    (entry,) = log(standin)
    scratch = str(standin["tmp"] / "node-local" / f"nestling-{os.getuid()}")
    assert entry["mounts"] == {
        "/dev": "host", "/dev/shm": "host", "/tmp": f"{scratch}/tmp", "/var/tmp": f"{scratch}/var_tmp",
        "$HOME": f"{scratch}/home",
    }  # fmt: skip
    assert json.loads(done.stdout)["HOME"] == f"{scratch}/home"
    # the control: --contain as before gives the image its own /dev/shm and a tmpfs home
    contain = ["apptainer", "exec", "--contain", "--cleanenv", str(standin["image"]), "python", "-c", "0"]
    assert subprocess.run(contain, env=standin["env"], check=False).returncode == 0
    assert log(standin)[-1]["mounts"]["/dev/shm"] == log(standin)[-1]["mounts"]["$HOME"] == "session tmpfs (64 MiB)"


def test_caches_and_fabric_settings_arrive(standin: dict[str, Any]) -> None:
    """Issue 26 #2, #5: a pre-filled host cache is visible at its path, NCCL/UCX/libfabric settings pass."""
    cache = standin["tmp"] / "torch cache"
    cache.mkdir()
    env = {"TORCH_HOME": str(cache), "NCCL_SOCKET_IFNAME": "ib0", "UCX_TLS": "rc", "FI_PROVIDER": "efa",
           "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "WANDB_BASE_URL": "https://wandb.site", "SITE_X": "1",
           "HF_HOME": str(standin["tmp"] / "missing")}  # fmt: skip
    done, _ = run_in(standin, spec(standin, env_pass=("SITE_*",)), [*env, "HOME"], env=env)
    seen = json.loads(done.stdout)
    assert {k: seen[k] for k in env if k != "HF_HOME"} == {k: v for k, v in env.items() if k != "HF_HOME"}
    assert seen["HF_HOME"] is None  # its directory does not exist: a variable pointing nowhere is worse
    assert [str(cache), str(cache), "rw"] in log(standin)[0]["binds"]


def test_secrets_pass_by_name_only(standin: dict[str, Any]) -> None:
    """Issue 26 #6: `--container_env WANDB_API_KEY` reaches the worker; its value is in no argv and no log."""
    secret = "wandb-secret-value-123"
    done, argv = run_in(standin, spec(standin, env=("WANDB_API_KEY",)), ["WANDB_API_KEY"],
                        env={"WANDB_API_KEY": secret})  # fmt: skip
    assert json.loads(done.stdout) == {"WANDB_API_KEY": secret}
    runtime_part = argv[: argv.index(str(standin["image"]))]
    assert secret not in "\0".join(argv) and "WANDB_API_KEY" not in "\0".join(runtime_part)
    (entry,) = log(standin)
    assert entry["env_by_name"] == ["WANDB_API_KEY"] and secret not in json.dumps(entry)
    # SingularityCE reads SINGULARITYENV_ only
    done, _ = run_in(standin, spec(standin, runtime="singularity", env=("WANDB_API_KEY",)), ["WANDB_API_KEY"],
                     env={"WANDB_API_KEY": secret}, version="singularity-ce version 4.1.2")  # fmt: skip
    assert json.loads(done.stdout) == {"WANDB_API_KEY": secret}


def test_gpus_of_a_slurm_task(standin: dict[str, Any]) -> None:
    """Issue 26 #9: the task's (cgroup-renumbered) CUDA_VISIBLE_DEVICES selects inside; the physical ids are the
    node-level ones SLURM granted; a GPU run without ids still gets --nv."""
    task = {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "1", "SLURM_STEP_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}
    done, argv = run_in(standin, spec(standin, gpu=True), ["CUDA_VISIBLE_DEVICES", "NESTLING_PHYSICAL_GPUS"],
                        env=task, job_task=True)  # fmt: skip
    assert json.loads(done.stdout) == {"CUDA_VISIBLE_DEVICES": "0,1", "NESTLING_PHYSICAL_GPUS": "2,3"}
    assert "--nv" in argv
    count_only = {k: v for k, v in task.items() if "GPU" not in k and k != "CUDA_VISIBLE_DEVICES"}
    env = {k: v for k, v in standin["env"].items() if k != "CUDA_VISIBLE_DEVICES"}
    wrapped = spec(standin, gpu=True).wrap([sys.executable], environ={**env, **count_only}, job_task=True)
    assert "--nv" in wrapped.argv


def test_an_image_with_python3_only_is_probed_once(standin: dict[str, Any]) -> None:
    """Issue 26 #9: the launch finds the image's interpreter once; the worker command then runs."""
    fake_apptainer.make_image(standin["image"], {"python3": sys.executable})
    sp = spec(standin)
    ready = image.ready(sp, environ=standin["env"])
    assert ready.python == "python3"
    assert [e["cmd"][0] for e in log(standin)] == ["python3"]  # `python` was refused before it started
    done, _ = run_in(standin, ready, ["NESTLING_IN_CONTAINER"])
    assert done.returncode == 0 and json.loads(done.stdout) == {"NESTLING_IN_CONTAINER": "1"}
    found = image.probe_image(ready, environ=standin["env"])
    assert found.python == "python3" and found.nestling_version is not None
    done, _ = run_in(standin, sp, ["X"])  # the unprobed spec: what every worker did before
    assert done.returncode == 255 and '"python": executable file not found' in done.stderr
    fake_apptainer.make_image(standin["image"], {})
    assert image.probe_image(sp, environ=standin["env"]).python is None


def test_a_uri_image_is_pulled_once_into_the_artifact_dir(standin: dict[str, Any]) -> None:
    """Issue 26 #7: a docker:// image would be fetched and converted by every array task."""
    uri = "docker://registry.example.org/me/nestling:0.2"
    target = naming.pulled_image(standin["art"], uri)
    sp = spec(standin, image=str(target), image_source=uri)
    for _ in range(3):  # a launch, its resume, a retrain
        ready = image.ready(sp, environ=standin["env"])
    pulls = [e for e in log(standin) if "pull" in e]
    assert len(pulls) == 1 and pulls[0]["pull"] == uri and pulls[0]["to"] != str(target)  # to a tmp, renamed
    assert target.is_file() and target.parent == standin["art"] / "_images"
    done, _ = run_in(standin, ready, ["APPTAINER_CONTAINER"])
    assert json.loads(done.stdout) == {"APPTAINER_CONTAINER": str(target)}
