"""Wrap a worker command so it runs inside an image, per runtime (apptainer, singularity, docker, podman).

Everything here builds argv lists, never shell strings: paths with spaces, quotes or newlines stay one argument.
Only what the caller names is bound from the host, and the host environment does not leak in.

GPU pinning per runtime (``gpus`` are the physical ids the worker was given):

- apptainer/singularity ``--nv`` exposes every GPU; ``CUDA_VISIBLE_DEVICES=<ids>`` then selects exactly those.
- docker ``--gpus device=<ids>`` exposes only those, renumbered from 0, so ``CUDA_VISIBLE_DEVICES=0..n-1``.
- podman with an NVIDIA CDI spec (``/etc/cdi`` or ``/var/run/cdi``): ``--device nvidia.com/gpu=<id>`` per GPU,
  renumbered like docker. Without a CDI spec (no NVIDIA stack, e.g. a test machine with fake SLURM GPUs) no
  device is passed and ``CUDA_VISIBLE_DEVICES=<physical ids>`` is set, so the pinning is still observable.

Every runtime sets ``NESTLING_IN_CONTAINER=1`` and, with GPUs, ``NESTLING_PHYSICAL_GPUS=<physical ids>``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.containers.options import (
    _URI,
    OCI_RUNTIMES,
    SIF_RUNTIMES,
    Bind,
    ContainerOptions,
    parse_bind,
    parse_env,
)
from nestling.core.errors import UsageError

if TYPE_CHECKING:
    pass

CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
IN_CONTAINER_ENV = "NESTLING_IN_CONTAINER"
PHYSICAL_GPUS_ENV = "NESTLING_PHYSICAL_GPUS"


def docker_daemon_present() -> bool:
    """Cheap check that a docker daemon could answer: DOCKER_HOST, the system socket or a rootless one."""
    if os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists():
        return True
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime_dir, "docker.sock").exists() if runtime_dir else False


def resolve_runtime(
    opts: ContainerOptions,
    which: Callable[[str], str | None] = shutil.which,
    docker_ok: Callable[[], bool] = docker_daemon_present,
) -> str:
    """Pick the runtime for ``opts``; ``auto`` follows the image kind and what is installed.

    .sif -> apptainer, else singularity. Otherwise docker when its client is installed and a daemon socket
    is there (a docker client without a daemon, as on podman-only machines, would only fail later), else
    podman, else docker if at least its client is installed. ``opts`` passed :func:`option_problems` already.
    """
    if opts.runtime != "auto":
        if which(opts.runtime) is None:
            raise UsageError(
                f"container runtime {opts.runtime!r} is not installed (not on PATH): install it, "
                "or choose another with --container_runtime (auto picks what is installed)"
            )
        return opts.runtime
    image = opts.image or ""
    if image.endswith(".sif"):
        for rt in SIF_RUNTIMES:
            if which(rt) is not None:
                return rt
        raise UsageError(
            f"container image {image!r} is a .sif file but neither apptainer nor singularity is installed: "
            "install apptainer, or use a docker/podman image reference"
        )
    if which("docker") is not None and docker_ok():
        return "docker"
    if which("podman") is not None:
        return "podman"
    if which("docker") is not None:
        return "docker"
    raise UsageError(
        f"no container runtime found for image {image!r}: install docker or podman (or apptainer for .sif "
        "images), or set --container_runtime"
    )


def nvidia_cdi_present(dirs: Sequence[str] = CDI_DIRS) -> bool:
    """Whether podman can select NVIDIA GPUs by CDI name (``nvidia-ctk cdi generate`` writes such a spec)."""
    for d in dirs:
        try:
            entries = sorted(Path(d).iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.suffix not in (".yaml", ".yml", ".json"):
                continue
            try:
                if "nvidia.com/gpu" in entry.read_text(errors="replace"):
                    return True
            except OSError:
                continue
    return False


def _host_user() -> tuple[int, int]:
    """The invoking user's uid and gid (a function so tests can pretend to be someone else)."""
    return os.getuid(), os.getgid()


def _apptainer_env(key: str, value: str) -> str:
    """Encode one ``--env`` item: apptainer parses it as a pflag stringToString (CSV once it holds two '=')."""
    pair = f"{key}={value}"
    if "=" in value:
        return '"' + pair.replace('"', '""') + '"'
    if value.endswith('"'):
        raise UsageError(
            f"container env {key}={value!r} ends with a double quote, which apptainer --env strips: "
            "drop the quote or set it inside the image"
        )
    return pair


def wrap_command(
    cmd: Sequence[str],
    opts: ContainerOptions,
    *,
    runtime: str,
    gpus: Sequence[str] | None,
    auto_binds: Sequence[Path],
    env: Mapping[str, str] | None = None,
    workdir: Path | str | None = None,
    interactive: bool = False,
) -> list[str]:
    """Return the argv that runs ``cmd`` inside ``opts.image`` with ``runtime`` (already resolved).

    ``auto_binds`` are bound read-write at the same path; ``env`` (e.g. the SLURM_* variables the caller
    chose) comes after the user's ``opts.env``; nestling's own variables come last and win. ``interactive``
    keeps stdin attached (docker/podman ``-i``; apptainer always passes it), for ``worker --serve``.
    """
    if runtime not in (*SIF_RUNTIMES, *OCI_RUNTIMES):
        raise ValueError(
            f"wrap_command needs a resolved runtime, got {runtime!r}; call resolve_runtime first"
        )
    if not opts.image:
        raise ValueError("wrap_command needs ContainerOptions.image")
    gpu_ids = [str(g) for g in gpus or ()]
    binds = [Bind(str(p), str(p)) for p in auto_binds] + [parse_bind(b) for b in opts.binds]
    for b in binds:
        if ":" in b.src or ":" in b.dst:
            raise UsageError(f"path {b.src!r} contains ':', which cannot be bound into a container: move it")
        if runtime in SIF_RUNTIMES and ("," in b.src or "," in b.dst):
            raise UsageError(f"path {b.src!r} contains ',', which {runtime} --bind splits on: rename it")

    merged: dict[str, str] = dict(parse_env(e) for e in opts.env)
    merged.update(env or {})
    merged[IN_CONTAINER_ENV] = "1"
    cdi = runtime == "podman" and bool(gpu_ids) and nvidia_cdi_present()
    if gpu_ids:
        renumbered = runtime == "docker" or cdi
        visible = [str(i) for i in range(len(gpu_ids))] if renumbered else gpu_ids
        merged["CUDA_VISIBLE_DEVICES"] = ",".join(visible)
        merged[PHYSICAL_GPUS_ENV] = ",".join(gpu_ids)
    extra = shlex.split(opts.args)

    if runtime in SIF_RUNTIMES:
        # --contain: no $HOME, /tmp or $PWD from the host; --cleanenv: no host environment.
        argv = [runtime, "exec", "--contain", "--cleanenv"]
        if gpu_ids:
            argv.append("--nv")
        for b in binds:
            argv += ["--bind", b.spec()]
        for key, value in merged.items():
            argv += ["--env", _apptainer_env(key, value)]
        if workdir is not None:
            argv += ["--pwd", str(workdir)]
        return [*argv, *extra, opts.image, *cmd]

    # docker / podman: --init forwards SIGTERM (scancel, preemption) and reaps zombies; --ipc=host gives
    # DataLoader workers and NCCL a real /dev/shm instead of the 64 MB default.
    argv = [runtime, "run", "--rm", "--init", "--ipc=host"]
    if interactive:
        argv.append("-i")
    uid, gid = _host_user()
    if runtime == "podman":
        # SELinux hosts would deny the unlabelled binds; relabelling (:z) the user's data is worse.
        argv += ["--security-opt", "label=disable"]
        if uid != 0:
            argv.append("--userns=keep-id")  # rootless: files written keep the user's uid
    elif uid != 0:
        argv += ["--user", f"{uid}:{gid}"]
        merged.setdefault("HOME", "/tmp")  # an arbitrary uid has no writable home in most images
    for b in binds:
        argv += ["-v", b.spec()]
    for key, value in merged.items():
        argv += ["-e", f"{key}={value}"]
    if gpu_ids:
        if runtime == "docker":
            joined = ",".join(gpu_ids)
            # docker parses --gpus as CSV: several ids need the quotes inside the value.
            argv += ["--gpus", f"device={joined}" if len(gpu_ids) == 1 else f'"device={joined}"']
        elif cdi:
            for g in gpu_ids:
                argv += ["--device", f"nvidia.com/gpu={g}"]
    if workdir is not None:
        argv += ["-w", str(workdir)]
    return [*argv, *extra, opts.image, *cmd]


def image_exists(
    opts: ContainerOptions,
    runtime: str,
    run: Callable[..., subprocess.CompletedProcess[Any]] = subprocess.run,
) -> bool:
    """Whether the image is available locally, for ``nestling doctor``.

    apptainer/singularity fetch URIs (docker://, oras://, library://) at run time, so those count as present.
    """
    image = opts.image
    if not image:
        return False
    if runtime in SIF_RUNTIMES:
        return bool(_URI.match(image)) or Path(image).exists()
    if runtime == "podman":
        probe = ["podman", "image", "exists", image]
    elif runtime == "docker":
        probe = ["docker", "image", "inspect", image]
    else:
        raise ValueError(f"image_exists needs a resolved runtime, got {runtime!r}")
    try:
        done = run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
