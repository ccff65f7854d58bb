"""Exact argv per container runtime, runtime resolution and option validation (no runtime needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nestling.core.containers import binds, runtimes
from nestling.core.containers import spec as container
from nestling.core.containers.binds import host_python_binds
from nestling.core.containers.options import ContainerOptions, parse_bind, validate
from nestling.core.containers.runtimes import image_exists, resolve_runtime, wrap_command
from nestling.core.containers.spec import in_container
from nestling.core.errors import UsageError

CMD = ["python", "-m", "nestling.worker", "/art/spec.json"]
ART = Path("/art")
DATA = Path("/data")
REAL_CDI_CHECK = runtimes.nvidia_cdi_present


@pytest.fixture(autouse=True)
def _root_no_cdi(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default every test to root and no CDI spec, so snapshots do not depend on the host."""
    monkeypatch.setattr(runtimes, "_host_user", lambda: (0, 0))
    monkeypatch.setattr(runtimes, "nvidia_cdi_present", lambda: False)


def opts(image: str = "img:1", **kw: object) -> ContainerOptions:
    return ContainerOptions(image=image, **kw)  # type: ignore[arg-type]


# --- apptainer / singularity -----------------------------------------------------------------------------


def test_apptainer_cpu() -> None:
    o = opts("/imgs/n.sif", binds=("/models:/models:ro",), env=("WANDB_MODE=offline",))
    argv = wrap_command(
        CMD, o, runtime="apptainer", gpus=None, auto_binds=[ART, DATA], env={"SLURM_JOB_ID": "7"}, workdir=ART
    )
    assert argv == [
        "apptainer", "exec", "--contain", "--cleanenv",
        "--bind", "/art:/art", "--bind", "/data:/data", "--bind", "/models:/models:ro",
        "--env", "WANDB_MODE=offline", "--env", "SLURM_JOB_ID=7", "--env", "NESTLING_IN_CONTAINER=1",
        "--pwd", "/art",
        "/imgs/n.sif", *CMD,
    ]  # fmt: skip


def test_apptainer_gpus_select_physical_ids() -> None:
    argv = wrap_command(CMD, opts("/imgs/n.sif"), runtime="apptainer", gpus=["3", "5"], auto_binds=[ART])
    assert argv == [
        "apptainer", "exec", "--contain", "--cleanenv", "--nv",
        "--bind", "/art:/art",
        "--env", "NESTLING_IN_CONTAINER=1", "--env", "CUDA_VISIBLE_DEVICES=3,5",
        "--env", "NESTLING_PHYSICAL_GPUS=3,5",
        "/imgs/n.sif", *CMD,
    ]  # fmt: skip


def test_singularity_same_shape() -> None:
    argv = wrap_command(
        CMD, opts("/imgs/n.sif", args="--nvccli"), runtime="singularity", gpus=["0"], auto_binds=[]
    )
    assert argv == [
        "singularity", "exec", "--contain", "--cleanenv", "--nv",
        "--env", "NESTLING_IN_CONTAINER=1", "--env", "CUDA_VISIBLE_DEVICES=0", "--env", "NESTLING_PHYSICAL_GPUS=0",
        "--nvccli", "/imgs/n.sif", *CMD,
    ]  # fmt: skip


def test_apptainer_env_values_with_equals_are_csv_quoted() -> None:
    argv = wrap_command(
        CMD, opts("/i.sif", env=('XLA_FLAGS=--a=1,b "c"',)), runtime="apptainer", gpus=None, auto_binds=[]
    )
    assert '"XLA_FLAGS=--a=1,b ""c"""' in argv


def test_apptainer_refuses_comma_in_bind() -> None:
    with pytest.raises(UsageError, match="a,b"):
        wrap_command(CMD, opts("/i.sif"), runtime="apptainer", gpus=None, auto_binds=[Path("/x/a,b")])


# --- docker ----------------------------------------------------------------------------------------------


def test_docker_one_gpu_renumbered() -> None:
    argv = wrap_command(
        CMD, opts(env=("A=1",), args="--network host"), runtime="docker", gpus=["3"], auto_binds=[ART, DATA],
        env={"SLURM_ARRAY_TASK_ID": "2"}, workdir=ART,
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


def test_docker_several_gpus_quoted_for_its_csv_parser() -> None:
    argv = wrap_command(CMD, opts(), runtime="docker", gpus=["3", "5"], auto_binds=[])
    assert argv[argv.index("--gpus") + 1] == '"device=3,5"'
    assert "CUDA_VISIBLE_DEVICES=0,1" in argv
    assert "NESTLING_PHYSICAL_GPUS=3,5" in argv


def test_docker_cpu_non_root_runs_as_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "_host_user", lambda: (1000, 100))
    argv = wrap_command(CMD, opts(), runtime="docker", gpus=[], auto_binds=[ART])
    assert argv == [
        "docker", "run", "--rm", "--init", "--ipc=host", "--user", "1000:100",
        "-v", "/art:/art",
        "-e", "NESTLING_IN_CONTAINER=1", "-e", "HOME=/tmp",
        "img:1", *CMD,
    ]  # fmt: skip


# --- podman ----------------------------------------------------------------------------------------------


def test_podman_without_cdi_passes_physical_ids() -> None:
    argv = wrap_command(CMD, opts(), runtime="podman", gpus=["1", "3"], auto_binds=[ART], workdir=ART)
    assert argv == [
        "podman", "run", "--rm", "--init", "--ipc=host", "--security-opt", "label=disable",
        "-v", "/art:/art",
        "-e", "NESTLING_IN_CONTAINER=1", "-e", "CUDA_VISIBLE_DEVICES=1,3", "-e", "NESTLING_PHYSICAL_GPUS=1,3",
        "-w", "/art",
        "img:1", *CMD,
    ]  # fmt: skip


def test_podman_with_cdi_selects_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "nvidia_cdi_present", lambda: True)
    argv = wrap_command(CMD, opts(), runtime="podman", gpus=["1", "3"], auto_binds=[ART])
    assert argv == [
        "podman", "run", "--rm", "--init", "--ipc=host", "--security-opt", "label=disable",
        "-v", "/art:/art",
        "-e", "NESTLING_IN_CONTAINER=1", "-e", "CUDA_VISIBLE_DEVICES=0,1", "-e", "NESTLING_PHYSICAL_GPUS=1,3",
        "--device", "nvidia.com/gpu=1", "--device", "nvidia.com/gpu=3",
        "img:1", *CMD,
    ]  # fmt: skip


def test_podman_rootless_keeps_user_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "_host_user", lambda: (1000, 1000))
    argv = wrap_command(CMD, opts(), runtime="podman", gpus=None, auto_binds=[])
    assert "--userns=keep-id" in argv
    assert "--user" not in argv


def test_nvidia_cdi_detection(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("kind: vendor.com/thing\n")
    assert not REAL_CDI_CHECK((str(tmp_path), str(tmp_path / "missing")))
    (tmp_path / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n")
    assert REAL_CDI_CHECK((str(tmp_path),))


# --- argv stays argv -------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["apptainer", "docker", "podman"])
def test_odd_paths_stay_single_elements(runtime: str) -> None:
    odd = Path('/art/with space/it\'s "quoted"\nnext line')
    cmd = ["python", "-c", "print('a b')", str(odd / "spec.json")]
    argv = wrap_command(cmd, opts("/i.sif"), runtime=runtime, gpus=None, auto_binds=[odd], workdir=odd)
    assert argv[-4:] == cmd
    assert f"{odd}:{odd}" in argv
    assert str(odd) in argv  # the workdir
    assert all(isinstance(a, str) for a in argv)


def test_env_mapping_overrides_user_env_and_nestling_wins() -> None:
    o = opts(env=("A=user", "NESTLING_IN_CONTAINER=0"))
    argv = wrap_command(CMD, o, runtime="podman", gpus=None, auto_binds=[], env={"A": "caller"})
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert envs == ["A=caller", "NESTLING_IN_CONTAINER=1"]


def test_wrap_command_needs_resolved_runtime() -> None:
    with pytest.raises(ValueError, match="auto"):
        wrap_command(CMD, opts(), runtime="auto", gpus=None, auto_binds=[])


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
    ],
)
def test_resolve_auto(image: str, installed: tuple[str, ...], docker_ok: bool, expected: str) -> None:
    got = resolve_runtime(opts(image), which=fake_which(*installed), docker_ok=lambda: docker_ok)
    assert got == expected


def test_resolve_explicit_missing_names_it() -> None:
    with pytest.raises(UsageError, match="'podman' is not installed"):
        resolve_runtime(opts(runtime="podman"), which=fake_which("docker"))


def test_resolve_explicit_installed() -> None:
    assert resolve_runtime(opts(runtime="podman"), which=fake_which("podman")) == "podman"


def test_resolve_sif_without_apptainer() -> None:
    with pytest.raises(UsageError, match="n.sif"):
        resolve_runtime(opts("/x/n.sif"), which=fake_which("docker", "podman"))


def test_resolve_nothing_installed() -> None:
    with pytest.raises(UsageError, match="nestling:latest"):
        resolve_runtime(opts("nestling:latest"), which=fake_which())


# --- validate --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "mentions"),
    [
        ({"runtime": "lxc"}, "'lxc'"),
        ({"binds": ("/tmp:relative",)}, "/tmp:relative"),
        ({"binds": ("/tmp:/x:rx",)}, "'rx'"),
        ({"binds": ("/tmp::/x",)}, "/tmp::/x"),
        ({"binds": ("/a:/b:ro:x",)}, "/a:/b:ro:x"),
        ({"binds": ("/no/such/dir/here:/x",)}, "/no/such/dir/here"),
        ({"env": ("NOVALUE",)}, "NOVALUE"),
        ({"env": ("1BAD=x",)}, "1BAD=x"),
        ({"args": "--opt 'unclosed"}, "unclosed"),
    ],
)
def test_validate_errors_name_the_value(kw: dict[str, object], mentions: str) -> None:
    with pytest.raises(UsageError) as err:
        validate(opts(**kw))
    assert mentions in str(err.value)
    assert "\n" not in str(err.value)


def test_validate_sif(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="missing.sif"):
        validate(opts(str(tmp_path / "missing.sif")))
    sif = tmp_path / "n.sif"
    sif.write_bytes(b"")
    validate(opts(str(sif)))
    with pytest.raises(UsageError, match="n.sif"):
        validate(opts(str(sif), runtime="docker"))


def test_validate_ok_and_no_image(tmp_path: Path) -> None:
    validate(opts(binds=(f"{tmp_path}", f"{tmp_path}:ro", f"{tmp_path}:/in:ro"), env=("A=", "B=x=y")))
    validate(ContainerOptions())
    with pytest.raises(UsageError, match="without an image"):
        validate(ContainerOptions(runtime="podman"))


def test_parse_bind_forms() -> None:
    assert parse_bind("/a").spec() == "/a:/a"
    assert parse_bind("/a:ro").spec() == "/a:/a:ro"
    assert parse_bind("/a:/b").spec() == "/a:/b"
    assert parse_bind("/a:/b:rw").spec() == "/a:/b"


# --- helpers ---------------------------------------------------------------------------------------------


def test_in_container_trusts_only_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
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


def test_passthrough_env_picks_job_variables_and_user_env_wins() -> None:
    environ = {
        "SLURM_JOB_ID": "7", "SLURMD_NODENAME": "node1", "MASTER_ADDR": "node1", "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "2", "HOME": "/root", "PATH": "/usr/bin", "CONTAINERS_CONF": "/x", "WANDB_API_KEY": "k",
    }  # fmt: skip
    assert container.passthrough_env(environ) == {
        "SLURM_JOB_ID": "7", "SLURMD_NODENAME": "node1", "MASTER_ADDR": "node1", "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "2",
    }  # fmt: skip
    assert "OMP_NUM_THREADS" not in container.passthrough_env(environ, opts(env=("OMP_NUM_THREADS=8",)))


def test_worker_python_is_the_hosts_only_when_bound_at_the_same_path() -> None:
    exe = "/opt/venv/bin/python"
    assert binds.worker_python(opts(), exe) == "python"
    assert binds.worker_python(opts(binds=("/opt/venv:/venv:ro",)), exe) == "python"
    assert binds.worker_python(opts(binds=("/opt/venv:ro",)), exe) == exe
    assert binds.worker_python(opts(binds=("/opt/venv/:/opt/venv/",)), exe) == exe
    assert binds.worker_python(opts(binds=tuple(host_python_binds()))) == sys.executable


def test_interactive_keeps_stdin_for_oci_runtimes() -> None:
    argv = wrap_command(CMD, opts(), runtime="podman", gpus=None, auto_binds=[], interactive=True)
    assert argv[:6] == ["podman", "run", "--rm", "--init", "--ipc=host", "-i"]
    argv = wrap_command(CMD, opts("/i.sif"), runtime="apptainer", gpus=None, auto_binds=[], interactive=True)
    assert "-i" not in argv  # apptainer passes stdin through by itself


def test_image_exists(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0 if argv[-1] == "have:1" else 1)

    assert image_exists(opts("have:1"), "podman", run=run)
    assert not image_exists(opts("nope:1"), "docker", run=run)
    assert calls == [["podman", "image", "exists", "have:1"], ["docker", "image", "inspect", "nope:1"]]
    assert not image_exists(opts(str(tmp_path / "a.sif")), "apptainer")
    assert image_exists(opts("docker://alpine"), "apptainer")

    def missing(argv: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        raise FileNotFoundError(argv[0])

    assert not image_exists(opts("x"), "podman", run=missing)


def test_host_python_binds_cover_the_interpreter() -> None:
    binds = host_python_binds()
    assert all(b.endswith(":ro") for b in binds)
    dsts = [parse_bind(b).dst for b in binds]
    exe = str(Path(sys.executable).resolve())
    assert any(exe.startswith(d.rstrip("/") + "/") for d in dsts)
    assert any(sys.prefix == d or sys.prefix.startswith(d + "/") for d in dsts)
    assert "/" not in dsts
