"""Exact argv per container runtime class, runtime resolution, binds, the environment a worker takes in, and option
validation (no runtime needed; what apptainer does with these command lines: test_apptainer_command_lines.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nestling.core.containers import binds, oci, runtimes
from nestling.core.containers.apptainer import Apptainer, Singularity, env_flag, for_eval, parse_version
from nestling.core.containers.binds import host_python_binds
from nestling.core.containers.detect import AUTO_ORDER, RUNTIMES, resolve_runtime, runtime_named
from nestling.core.containers.env import PASSTHROUGH, EnvPlan, is_secret_name, plan_env
from nestling.core.containers.oci import Docker, Podman
from nestling.core.containers.options import Bind, parse_bind, parse_env, resolve_bind, validate
from nestling.core.containers.runtimes import ContainerRuntime, Invocation, WorkerGpus
from nestling.core.containers.spec import ContainerSpec, in_container
from nestling.core.errors import UsageError

CMD = ("python", "-m", "nestling.worker", "/art/spec.json")
ART = Bind("/art", "/art")
DATA = Bind("/data", "/data")
REAL_CDI_CHECK = oci.nvidia_cdi_present
SCRATCH = "/tmp/nestling-0"


@pytest.fixture(autouse=True)
def _root_no_cdi(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default every test to root and no CDI spec, so snapshots do not depend on the host."""
    monkeypatch.setattr(runtimes, "host_user", lambda: (0, 0))
    monkeypatch.setattr(oci, "nvidia_cdi_present", lambda: False)


def env(literal: dict[str, str] | None = None, by_name: dict[str, str] | None = None) -> EnvPlan:
    return EnvPlan(literal=dict(literal or {}), by_name=dict(by_name or {}))


def wrap(runtime: str, version: str | None = "apptainer version 1.3.4", **kw: Any) -> list[str]:
    kw.setdefault("image", "/imgs/n.sif" if runtime in ("apptainer", "singularity") else "img:1")
    kw.setdefault("scratch", SCRATCH)
    return runtime_named(runtime, version).command(Invocation(cmd=CMD, **kw), {}).argv


APPTAINER = ["exec", "--contain", "--bind", "/dev", "--workdir", SCRATCH, "--cleanenv"]


# --- the interface ---------------------------------------------------------------------------------------


def test_one_class_per_runtime_behind_one_interface() -> None:
    assert list(RUNTIMES) == ["apptainer", "singularity", "docker", "podman"]
    assert all(issubclass(cls, ContainerRuntime) for cls in AUTO_ORDER)
    assert [cls.sif_images for cls in AUTO_ORDER] == [True, True, False, False]
    with pytest.raises(ValueError, match="auto"):
        runtime_named("auto")


# --- apptainer / singularity -----------------------------------------------------------------------------


def test_apptainer_cpu() -> None:
    argv = wrap(
        "apptainer", binds=(ART, DATA, Bind("/models", "/models", ro=True)),
        env=env({"WANDB_MODE": "offline", "SLURM_JOB_ID": "7"}), workdir="/art",
    )  # fmt: skip
    assert argv == [
        "apptainer", *APPTAINER, "--no-eval",
        "--bind", "/art:/art", "--bind", "/data:/data", "--bind", "/models:/models:ro",
        "--env", "WANDB_MODE=offline", "--env", "SLURM_JOB_ID=7", "--env", "NESTLING_IN_CONTAINER=1",
        "--pwd", "/art",
        "/imgs/n.sif", *CMD,
    ]  # fmt: skip


def test_apptainer_gpus_select_the_ids_the_task_sees_and_record_physical_ones() -> None:
    gpus = WorkerGpus(physical=("3", "5"), host_visible=("0", "1"), wanted=True)
    argv = wrap("apptainer", binds=(ART,), gpus=gpus)
    assert argv == [
        "apptainer", *APPTAINER, "--no-eval", "--nv",
        "--bind", "/art:/art",
        "--env", "NESTLING_IN_CONTAINER=1", "--env", "CUDA_VISIBLE_DEVICES=0,1",
        "--env", "NESTLING_PHYSICAL_GPUS=3,5",
        "/imgs/n.sif", *CMD,
    ]  # fmt: skip


def test_apptainer_nv_follows_a_gpu_run_without_ids() -> None:
    """Issue 26 #9: a count-only GRES leaves CUDA_VISIBLE_DEVICES unset; the driver must still go in."""
    argv = wrap("apptainer", gpus=WorkerGpus(wanted=True))
    assert "--nv" in argv and not any(a.startswith("CUDA_VISIBLE_DEVICES") for a in argv)
    assert "--nv" not in wrap("apptainer", gpus=WorkerGpus())


def test_singularity_same_shape_and_its_env_prefix() -> None:
    inv = Invocation(cmd=CMD, image="/i.sif", env=env(by_name={"WANDB_API_KEY": "k"}), args=("--nvccli",),
                     gpus=WorkerGpus(physical=("0",), host_visible=("0",)), scratch=SCRATCH)  # fmt: skip
    ce = Singularity("singularity-ce version 3.11.4-jammy").command(inv, {"PATH": "/bin"})
    assert ce.argv == [
        "singularity", *APPTAINER, "--no-eval", "--nv",
        "--env", "NESTLING_IN_CONTAINER=1", "--env", "CUDA_VISIBLE_DEVICES=0", "--env", "NESTLING_PHYSICAL_GPUS=0",
        "--nvccli", "/i.sif", *CMD,
    ]  # fmt: skip
    assert ce.env == {"PATH": "/bin", "SINGULARITYENV_WANDB_API_KEY": "k"}
    assert ce.make_dirs == (SCRATCH,)
    # apptainer's own `singularity` name reads APPTAINERENV_
    assert "APPTAINERENV_WANDB_API_KEY" in Singularity("apptainer version 1.2.5").command(inv, {}).env


@pytest.mark.parametrize(
    ("version", "no_eval"),
    [
        ("apptainer version 1.3.4", True),
        ("apptainer version 1.1.0", True),
        ("apptainer version 1.0.3", False),
        ("singularity-ce version 3.10.0", True),
        ("singularity-ce version 3.9.9", False),
        ("singularity version 3.8.7-1.el7", False),
        (None, False),
        ("garbage", False),
    ],
)
def test_no_eval_only_where_the_runtime_has_it(version: str | None, no_eval: bool) -> None:
    assert Apptainer(version).no_eval is no_eval
    argv = wrap("apptainer", version=version, env=env({"V": "a$HOME"}))
    assert ("--no-eval" in argv) is no_eval
    assert ("V=a$HOME" if no_eval else "V=a\\$HOME") in argv  # older runtimes get it escaped for their shell


def test_parse_version() -> None:
    assert parse_version("apptainer version 1.3.4") == ("apptainer", (1, 3))
    assert parse_version("singularity-ce version 3.11.4-jammy") == ("singularity-ce", (3, 11))
    assert parse_version("singularity version 3.8.7") == ("singularity", (3, 8))
    assert parse_version("") is None


def test_env_flag_encodes_for_pflag_and_for_eval_escapes_for_the_shell() -> None:
    assert env_flag("A", "b") == "A=b"
    assert env_flag("XLA_FLAGS", '--a=1,b "c"') == '"XLA_FLAGS=--a=1,b ""c"""'
    assert env_flag("A", 'ends"') is None  # pflag trims it: such a value goes by APPTAINERENV_ instead
    assert for_eval("a\\b$c`d`\"") == "a\\\\b\\$c\\`d\\`\""


def test_apptainer_values_it_cannot_carry_and_secrets_go_through_its_environment() -> None:
    inv = Invocation(cmd=CMD, image="/i.sif", env=env({"Q": 'x"'}, {"HF_TOKEN": "t0k"}), scratch=SCRATCH)
    wrapped = Apptainer("apptainer version 1.3.4").command(inv, {"HOME": "/root"})
    assert "Q" not in " ".join(wrapped.argv) and "t0k" not in " ".join(wrapped.argv)
    assert wrapped.env == {"HOME": "/root", "APPTAINERENV_Q": 'x"', "APPTAINERENV_HF_TOKEN": "t0k"}
    old = Apptainer("apptainer version 1.0.0").command(inv, {})
    assert old.env["APPTAINERENV_HF_TOKEN"] == "t0k"
    assert Apptainer("apptainer version 1.0.0").command(
        Invocation(cmd=CMD, image="/i.sif", env=env(by_name={"K": "a$b"})), {}
    ).env["APPTAINERENV_K"] == "a\\$b"


# --- docker ----------------------------------------------------------------------------------------------


def test_docker_one_gpu_renumbered() -> None:
    argv = wrap(
        "docker", binds=(ART, DATA), env=env({"A": "1", "SLURM_ARRAY_TASK_ID": "2"}),
        gpus=WorkerGpus(physical=("3",), host_visible=("3",)), workdir="/art", args=("--network", "host"),
    )  # fmt: skip
    assert argv == [
        "docker", "run", "--rm", "--init", "--ipc=host",
        "-v", "/art:/art", "-v", "/data:/data",
        "-e", "A=1", "-e", "SLURM_ARRAY_TASK_ID=2", "-e", "NESTLING_IN_CONTAINER=1",
        "-e", "CUDA_VISIBLE_DEVICES=0", "-e", "NESTLING_PHYSICAL_GPUS=3",
        "--gpus", "device=3",
        "-w", "/art",
        "--network", "host",
        "img:1", *CMD,
    ]  # fmt: skip


def test_docker_several_gpus_quoted_for_its_csv_parser_and_all_without_ids() -> None:
    argv = wrap("docker", gpus=WorkerGpus(physical=("3", "5")))
    assert argv[argv.index("--gpus") + 1] == '"device=3,5"'
    assert "CUDA_VISIBLE_DEVICES=0,1" in argv and "NESTLING_PHYSICAL_GPUS=3,5" in argv
    argv = wrap("docker", gpus=WorkerGpus(wanted=True))
    assert argv[argv.index("--gpus") + 1] == "all"


def test_docker_cpu_non_root_runs_as_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "host_user", lambda: (1000, 100))
    argv = wrap("docker", binds=(ART,))
    assert argv == [
        "docker", "run", "--rm", "--init", "--ipc=host", "--user", "1000:100",
        "-v", "/art:/art",
        "-e", "HOME=/tmp", "-e", "NESTLING_IN_CONTAINER=1",
        "img:1", *CMD,
    ]  # fmt: skip


def test_oci_secrets_pass_by_name_with_the_value_in_the_clients_environment() -> None:
    inv = Invocation(cmd=CMD, image="img:1", env=env({"A": "1"}, {"WANDB_API_KEY": "k3y"}))
    for cls in (Docker, Podman):
        wrapped = cls().command(inv, {"PATH": "/bin"})
        assert wrapped.argv[wrapped.argv.index("WANDB_API_KEY") - 1] == "-e"
        assert "k3y" not in "\0".join(wrapped.argv)
        assert wrapped.env == {"PATH": "/bin", "WANDB_API_KEY": "k3y"}


# --- podman ----------------------------------------------------------------------------------------------


def test_podman_without_cdi_passes_physical_ids() -> None:
    argv = wrap("podman", binds=(ART,), gpus=WorkerGpus(physical=("1", "3")), workdir="/art")
    assert argv == [
        "podman", "run", "--rm", "--init", "--ipc=host", "--security-opt", "label=disable",
        "-v", "/art:/art",
        "-e", "NESTLING_IN_CONTAINER=1", "-e", "CUDA_VISIBLE_DEVICES=1,3", "-e", "NESTLING_PHYSICAL_GPUS=1,3",
        "-w", "/art",
        "img:1", *CMD,
    ]  # fmt: skip


def test_podman_with_cdi_selects_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oci, "nvidia_cdi_present", lambda: True)
    argv = wrap("podman", binds=(ART,), gpus=WorkerGpus(physical=("1", "3")))
    assert argv == [
        "podman", "run", "--rm", "--init", "--ipc=host", "--security-opt", "label=disable",
        "-v", "/art:/art",
        "-e", "NESTLING_IN_CONTAINER=1", "-e", "CUDA_VISIBLE_DEVICES=0,1", "-e", "NESTLING_PHYSICAL_GPUS=1,3",
        "--device", "nvidia.com/gpu=1", "--device", "nvidia.com/gpu=3",
        "img:1", *CMD,
    ]  # fmt: skip
    assert wrap("podman", gpus=WorkerGpus(wanted=True))[-7:-5] == ["--device", "nvidia.com/gpu=all"]


def test_podman_rootless_keeps_user_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "host_user", lambda: (1000, 1000))
    argv = wrap("podman")
    assert "--userns=keep-id" in argv and "--user" not in argv


def test_multi_task_gets_the_host_network_unless_args_chose_one() -> None:
    assert wrap("podman", multi_task=True)[-7:-5] == ["--network", "host"]
    assert "host" not in wrap("podman", multi_task=True, args=("--net=slirp4netns",))
    assert "--network" not in wrap("apptainer", multi_task=True)  # apptainer shares the host network


def test_nvidia_cdi_detection(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("kind: vendor.com/thing\n")
    assert not REAL_CDI_CHECK((str(tmp_path), str(tmp_path / "missing")))
    (tmp_path / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n")
    assert REAL_CDI_CHECK((str(tmp_path),))


# --- argv stays argv -------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["apptainer", "docker", "podman"])
def test_odd_paths_stay_single_elements(runtime: str) -> None:
    odd = '/art/with space/it\'s "quoted"\nnext line'
    cmd = ("python", "-c", "print('a b')", f"{odd}/spec.json")
    wrapped = runtime_named(runtime).command(
        Invocation(cmd=cmd, image="/i.sif", binds=(Bind(odd, odd),), workdir=odd), {}
    )
    assert wrapped.argv[-4:] == list(cmd)
    assert f"{odd}:{odd}" in wrapped.argv and odd in wrapped.argv
    assert all(isinstance(a, str) for a in wrapped.argv)


def test_user_env_first_and_nestling_wins() -> None:
    plan = plan_env({"A": "caller", "SLURM_JOB_ID": "7"}, [("A", "user"), ("NESTLING_IN_CONTAINER", "0")])
    argv = wrap("podman", env=plan)
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert envs == ["A=user", "SLURM_JOB_ID=7", "NESTLING_IN_CONTAINER=1"]


def test_interactive_keeps_stdin_for_oci_runtimes() -> None:
    assert wrap("podman", interactive=True)[:6] == ["podman", "run", "--rm", "--init", "--ipc=host", "-i"]
    assert "-i" not in wrap("apptainer", interactive=True)  # apptainer passes stdin through by itself


# --- the environment a worker takes in (issue 26 #2, #5, #6) -----------------------------------------------


def test_defaults_pass_what_clusters_configure_their_fabric_with() -> None:
    environ = {
        "SLURM_JOB_ID": "7", "SLURMD_NODENAME": "n1", "MASTER_ADDR": "n1", "WANDB_MODE": "offline",
        "WANDB_BASE_URL": "https://wandb.site", "OMP_NUM_THREADS": "2", "NCCL_SOCKET_IFNAME": "ib0",
        "NCCL_IB_HCA": "mlx5_0", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "UCX_TLS": "rc", "FI_PROVIDER": "efa",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "GLOO_SOCKET_IFNAME": "eth0",
        "HOME": "/root", "PATH": "/usr/bin", "CONTAINERS_CONF": "/x", "WANDB_API_KEY": "k", "MY_SITE_X": "1",
    }  # fmt: skip
    plan = plan_env(environ, [], is_dir=lambda p: False)
    assert sorted(plan.literal) == sorted(k for k in environ if k not in (
        "HOME", "PATH", "CONTAINERS_CONF", "WANDB_API_KEY", "MY_SITE_X"))  # fmt: skip
    assert plan.by_name == {}
    more = plan_env(environ, [], extra_patterns=("MY_SITE_*", "WANDB_*"), is_dir=lambda p: False)
    assert more.literal["MY_SITE_X"] == "1"
    assert more.by_name == {"WANDB_API_KEY": "k"}  # a pattern that reaches a secret passes it by name
    assert "OMP_NUM_THREADS" in PASSTHROUGH  # thread counts are passed, never computed here


def test_user_items_literal_by_name_and_overriding(tmp_path: Path) -> None:
    environ = {"OMP_NUM_THREADS": "2", "HF_TOKEN": "hf-1", "MODE": "x"}
    plan = plan_env(environ, [("OMP_NUM_THREADS", "8"), ("HF_TOKEN", None), ("MODE", None), ("GONE", None)])
    assert plan.literal == {"OMP_NUM_THREADS": "8"}
    assert plan.by_name == {"HF_TOKEN": "hf-1", "MODE": "x"}  # asked by name: never on a command line


def test_host_dirs_pass_only_with_their_bind(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    link = tmp_path / "link"
    link.symlink_to(cache)
    environ = {"TORCH_HOME": str(link), "HF_HOME": str(tmp_path / "missing"), "TMPDIR": "/tmp",
               "XDG_CACHE_HOME": "relative/dir", "TRITON_CACHE_DIR": str(cache)}  # fmt: skip
    plan = plan_env(environ, [])
    assert plan.literal == {"TORCH_HOME": str(link), "TRITON_CACHE_DIR": str(cache)}
    assert plan.dirs == [(str(cache), str(link)), (str(cache), str(cache))]
    # TMPDIR is where the runtime's scratch goes, never a bind: SLURM sets it to /tmp, the whole host /tmp


@pytest.mark.parametrize(
    ("key", "secret"),
    [("WANDB_API_KEY", True), ("HF_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True), ("MY_PASSWORD", True),
     ("GITHUB_TOKEN", True), ("NEPTUNE_API_TOKEN", True), ("TOKENIZERS_PARALLELISM", False),
     ("WANDB_MODE", False), ("NCCL_IB_HCA", False), ("KEYBOARD", False)],
)  # fmt: skip
def test_secret_names(key: str, secret: bool) -> None:
    assert is_secret_name(key) is secret


def test_a_secret_value_on_the_command_line_is_refused_without_echoing_it() -> None:
    with pytest.raises(UsageError) as err:
        parse_env("WANDB_API_KEY=abc123")
    assert "abc123" not in str(err.value) and "--container_env WANDB_API_KEY" in str(err.value)
    assert parse_env("WANDB_API_KEY").by_name and parse_env("A=").value == ""


# --- resolve_runtime -------------------------------------------------------------------------------------


def fake_which(*installed: str):
    return lambda name: f"/usr/bin/{name}" if name in installed else None


@pytest.mark.parametrize(
    ("image", "installed", "docker_ok", "expected"),
    [
        ("/x/n.sif", ("apptainer", "singularity", "docker"), True, "apptainer"),
        ("/x/n.sif", ("singularity", "podman"), True, "singularity"),
        ("nestling:latest", ("apptainer", "docker", "podman"), True, "docker"),
        ("nestling:latest", ("docker", "podman"), False, "podman"),
        ("nestling:latest", ("podman",), True, "podman"),
        ("nestling:latest", ("docker",), False, "docker"),
        ("docker://reg/nestling:1", ("apptainer", "podman"), False, "apptainer"),  # apptainer's URI syntax
        ("docker://reg/nestling:1", ("podman",), False, "podman"),  # podman takes docker:// too
    ],
)
def test_resolve_auto(
    image: str, installed: tuple[str, ...], docker_ok: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oci, "docker_daemon_present", lambda: docker_ok)
    assert resolve_runtime(image, "auto", which=fake_which(*installed)) == expected


def test_resolve_explicit() -> None:
    with pytest.raises(UsageError, match="'podman' is not installed"):
        resolve_runtime("img:1", "podman", which=fake_which("docker"))
    assert resolve_runtime("img:1", "podman", which=fake_which("podman")) == "podman"
    with pytest.raises(UsageError, match="n.sif"):
        resolve_runtime("/x/n.sif", which=fake_which("docker", "podman"))
    with pytest.raises(UsageError, match="nestling:latest"):
        resolve_runtime("nestling:latest", which=fake_which())


# --- validate and binds ----------------------------------------------------------------------------------


def config(image: str | None = "img:1", **kw: Any) -> Any:
    fields = {"container_image": image, "container_runtime": "auto", "container_bind": [], "container_env": [],
              "container_env_pass": [], "container_args": ""}  # fmt: skip
    fields.update(kw)
    return SimpleNamespace(**fields)


@pytest.mark.parametrize(
    ("kw", "mentions"),
    [
        ({"container_runtime": "lxc"}, "'lxc'"),
        ({"container_bind": ["/tmp:relative"]}, "/tmp:relative"),
        ({"container_bind": ["/tmp:/x:rx"]}, "'rx'"),
        ({"container_bind": ["/tmp::/x"]}, "/tmp::/x"),
        ({"container_bind": ["/a:/b:ro:x"]}, "/a:/b:ro:x"),
        ({"container_bind": ["/no/such/dir/here:/x"]}, "/no/such/dir/here"),
        ({"container_env": ["NESTLING_SURELY_UNSET_VAR"]}, "NESTLING_SURELY_UNSET_VAR' is passed by name"),
        ({"container_env": ["1BAD=x"]}, "1BAD=x"),
        ({"container_env": ["MY_TOKEN=tok"]}, "--container_env MY_TOKEN"),
        ({"container_env_pass": ["NCCL-*"]}, "NCCL-*"),
        ({"container_args": "--opt 'unclosed"}, "unclosed"),
        ({"container_runtime": "docker", "container_image": "oras://reg/img:1"}, "apptainer image"),
    ],
)
def test_validate_errors_name_the_value(kw: dict[str, Any], mentions: str) -> None:
    with pytest.raises(UsageError) as err:
        validate(config(**kw))
    assert mentions in str(err.value)
    assert "\n" not in str(err.value) and "tok" not in str(err.value).replace("TOKEN", "")


def test_validate_sif(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="missing.sif"):
        validate(config(str(tmp_path / "missing.sif")))
    sif = tmp_path / "n.sif"
    sif.write_bytes(b"")
    validate(config(str(sif)))
    with pytest.raises(UsageError, match="n.sif"):
        validate(config(str(sif), container_runtime="docker"))
    validate(config("docker://alpine:3"))  # pulled once at launch: nothing to find here


def test_validate_ok_no_image_and_relative_sources(tmp_path: Path) -> None:
    (tmp_path / "rel").mkdir()
    validate(config(container_bind=[f"{tmp_path}", f"{tmp_path}:ro", f"{tmp_path}:/in:ro", "rel:/data", "rel"],
                    container_env=["A=", "B=x=y"], container_env_pass=["NCCL_*", "SITE_?"]), cwd=tmp_path)  # fmt: skip
    validate(config(None))
    with pytest.raises(UsageError, match="without an image"):
        validate(config(None, container_runtime="podman"))
    with pytest.raises(UsageError, match="rel"):
        validate(config(container_bind=["rel:/data"]), cwd=tmp_path / "elsewhere")


def test_parse_bind_forms() -> None:
    assert parse_bind("/a").spec() == "/a:/a"
    assert parse_bind("/a:ro").spec() == "/a:/a:ro"
    assert parse_bind("/a:/b").spec() == "/a:/b"
    assert parse_bind("/a:/b:rw").spec() == "/a:/b"
    assert parse_bind("rel").spec() == "rel:rel"


def test_relative_and_symlinked_sources_are_resolved(tmp_path: Path) -> None:
    """Issue 26 #8: `reldata:/data` would be a podman named volume; a symlinked dir bound at its target only
    would leave the given path missing inside."""
    real = tmp_path / "real data"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert resolve_bind("real data:/data", tmp_path) == Bind(str(real), "/data")
    assert resolve_bind("link", tmp_path) == Bind(str(real), str(tmp_path / "link"))
    assert resolve_bind(f"{tmp_path}/link:ro", "/") == Bind(str(real), str(tmp_path / "link"), ro=True)


def test_task_data_dirs_bind_real_at_given(tmp_path: Path) -> None:
    art, data = tmp_path / "art", tmp_path / "scratch" / "data"
    data.mkdir(parents=True)
    art.mkdir()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "data").symlink_to(data)
    (art / "inside").mkdir()
    got, missing = binds.auto_binds(art, [tmp_path / "home" / "data", art / "inside", tmp_path / "nope"])
    assert got == [Bind(str(art), str(art)), Bind(str(data), str(tmp_path / "home" / "data"))]
    assert missing == [str(tmp_path / "nope")]


# --- helpers ---------------------------------------------------------------------------------------------


def test_in_container_trusts_only_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NESTLING_IN_CONTAINER", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(var, raising=False)
    # Marker files of the machine nestling runs on (/.dockerenv, /run/.containerenv) must not count: a launcher
    # started in a dev container would otherwise record in_container for runs it never wrapped.
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: True if str(self) in ("/.dockerenv", "/run/.containerenv")
                        else real_exists(self))  # fmt: skip
    assert not in_container()
    monkeypatch.setenv("NESTLING_IN_CONTAINER", "0")
    assert not in_container()
    monkeypatch.setenv("APPTAINER_CONTAINER", "/x.sif")
    assert in_container()
    monkeypatch.delenv("APPTAINER_CONTAINER")
    monkeypatch.setenv("SINGULARITY_CONTAINER", "/x.sif")
    assert in_container()
    monkeypatch.delenv("SINGULARITY_CONTAINER")
    monkeypatch.setenv("NESTLING_IN_CONTAINER", "1")
    assert in_container()


def test_worker_python_is_the_hosts_only_when_bound_at_the_same_path(tmp_path: Path) -> None:
    exe = "/opt/venv/bin/python"
    assert binds.worker_python([], exe) == "python"
    assert binds.worker_python([Bind("/opt/venv", "/venv", True)], exe) == "python"
    assert binds.worker_python([Bind("/opt/venv", "/opt/venv", True)], exe) == exe
    host = [resolve_bind(b, "/") for b in host_python_binds()]
    assert binds.worker_python(host) == sys.executable


def test_image_available(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0 if argv[-1] == "have:1" else 1)

    assert Podman().image_available("have:1", run=run)
    assert not Docker().image_available("nope:1", run=run)
    assert calls == [["podman", "image", "exists", "have:1"], ["docker", "image", "inspect", "nope:1"]]
    assert not Apptainer().image_available(str(tmp_path / "a.sif"))
    assert Apptainer().image_available("docker://alpine")

    def missing(argv: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        raise FileNotFoundError(argv[0])

    assert not Podman().image_available("x", run=missing)


def test_host_python_binds_cover_the_interpreter() -> None:
    found = host_python_binds()
    assert all(b.endswith(":ro") for b in found)
    dsts = [parse_bind(b).dst for b in found]
    exe = str(Path(sys.executable).resolve())
    assert any(exe.startswith(d.rstrip("/") + "/") for d in dsts)
    assert any(sys.prefix == d or sys.prefix.startswith(d + "/") for d in dsts)
    assert "/" not in dsts


def test_spec_json_is_generic_and_reads_older_shapes(tmp_path: Path) -> None:
    spec = ContainerSpec(image="/i.sif", runtime="apptainer", binds=("/a:/b:ro",), env=("A=1", "K"),
                         env_pass=("X_*",), auto_binds=("/art:/art",), runtime_version="apptainer version 1.3.4",
                         gpu=True, image_source="docker://x")  # fmt: skip
    import json

    assert ContainerSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    older = {"image": "/i.sif", "runtime": "apptainer", "binds": ["/a:/b:ro"], "env": ["A=1"], "args": "",
             "auto_binds": ["/art"], "python": "python", "workdir": "/art"}  # fmt: skip
    assert ContainerSpec.from_json({**older, "a_field_from_the_future": 1}) == ContainerSpec(
        image="/i.sif", runtime="apptainer", binds=("/a:/b:ro",), env=("A=1",), auto_binds=("/art",), workdir="/art"
    )


def test_scratch_is_node_local_disk() -> None:
    assert runtimes.node_scratch({"TMPDIR": "/local/job42"}) == "/local/job42/nestling-0"
    assert runtimes.node_scratch({"TMPDIR": "rel"}) == runtimes.node_scratch({}) == "/tmp/nestling-0"
    assert os.path.isabs(runtimes.node_scratch(os.environ))
