"""Which runtime: the registry of runtime classes, ``--container_runtime auto``, and each runtime's version.

``auto`` asks the runtimes in AUTO_ORDER and takes the first whose ``detect`` says yes: a .sif or an apptainer URI
(``docker://``, ``oras://``, ...) goes to apptainer, else singularity; an image reference to docker when its client and a daemon are there, else podman; a docker
client alone is the last resort. A new runtime is a class in its own module, listed here.
"""

from __future__ import annotations

import shutil
import subprocess

from nestling.core.containers.apptainer import Apptainer, Singularity
from nestling.core.containers.oci import Docker, Podman
from nestling.core.containers.options import REMOTE_IMAGE
from nestling.core.containers.runtimes import ContainerRuntime
from nestling.core.errors import UsageError
from nestling.core.host.processes import Run, Which

AUTO_ORDER: tuple[type[ContainerRuntime], ...] = (Apptainer, Singularity, Docker, Podman)
RUNTIMES: dict[str, type[ContainerRuntime]] = {cls.name: cls for cls in AUTO_ORDER}


def runtime_named(name: str, version: str | None = None) -> ContainerRuntime:
    """The runtime object for a resolved name (never ``auto``)."""
    try:
        return RUNTIMES[name](version)
    except KeyError:
        raise ValueError(f"unknown container runtime {name!r}; resolve 'auto' with resolve_runtime first") from None


def resolve_runtime(image: str, runtime: str = "auto", which: Which = shutil.which) -> str:
    """The runtime for ``image``: the one named, which must be installed, or what ``auto`` detects here."""
    if runtime != "auto":
        if which(runtime) is None:
            raise UsageError(
                f"container runtime {runtime!r} is not installed (not on PATH): install it, "
                "or choose another with --container_runtime (auto picks what is installed)"
            )
        return runtime
    for cls in AUTO_ORDER:
        if cls.detect(image, which):
            return cls.name
    if image.endswith(".sif") or (REMOTE_IMAGE.match(image) and not image.startswith("docker://")):
        raise UsageError(
            f"container image {image!r} is a .sif file but neither apptainer nor singularity is installed: "
            "install apptainer, or use a docker/podman image reference"
        )
    if Docker.installed(which):
        return Docker.name
    raise UsageError(
        f"no container runtime found for image {image!r}: install docker or podman (or apptainer for .sif "
        "images), or set --container_runtime"
    )


def runtime_version(name: str, run: Run = subprocess.run) -> str | None:
    """The first line of ``NAME --version``, or None when it does not answer."""
    try:
        done = run([name, "--version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or "").strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else None
