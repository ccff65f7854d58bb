"""Docker and podman: ``run --rm --init --ipc=host [-i] ... -v SRC:DST -e KEY=VALUE -e SECRET ... IMAGE CMD``.

- ``--init`` forwards SIGTERM and USR2 (scancel, preemption) to the worker and reaps zombies; ``--ipc=host`` gives
  DataLoader workers and NCCL the host's ``/dev/shm`` instead of a private 64 MB one (NCCL compares ``/dev/shm``
  between ranks, see apptainer.py).
- Secrets go by name, ``-e KEY`` with the value in the client's own environment (docker/podman take an ``-e`` without
  ``=`` from there), so ``ps`` on the node never shows them.
- GPU pinning, ``gpus.physical`` being the node-level ids the worker was given:
  docker ``--gpus device=<ids>`` exposes only those, renumbered from 0; podman with an NVIDIA CDI spec
  (``/etc/cdi``, ``/var/run/cdi``) ``--device nvidia.com/gpu=<id>`` per GPU, renumbered alike. Without a CDI spec
  (no NVIDIA stack, e.g. a test machine with fake SLURM GPUs) podman passes no device and keeps the physical ids
  in ``CUDA_VISIBLE_DEVICES``, so the pinning stays observable. A GPU run with no id known gets every GPU.
- Several tasks of one job (multi-node DDP) get ``--network host`` so the ranks reach ``MASTER_ADDR``, unless
  ``--container_args`` chose a network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from nestling.core.containers import runtimes
from nestling.core.containers.runtimes import ContainerRuntime, Invocation, Wrapped
from nestling.core.host.processes import Run, Which

CDI_DIRS = ("/etc/cdi", "/var/run/cdi")


def docker_daemon_present() -> bool:
    """Cheap check that a docker daemon could answer: DOCKER_HOST, the system socket or a rootless one."""
    if os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists():
        return True
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime_dir, "docker.sock").exists() if runtime_dir else False


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


class OciRuntime(ContainerRuntime):
    """What docker and podman share; each says how it selects GPUs and keeps the user's uid."""

    def command(self, inv: Invocation, environ: Mapping[str, str]) -> Wrapped:
        argv = [self.name, "run", "--rm", "--init", "--ipc=host"]
        if inv.interactive:
            argv.append("-i")
        literal = dict(inv.env.literal)
        argv += self.user_flags(literal)
        for b in inv.binds:
            argv += ["-v", b.spec()]
        gpu_flags, visible = self.gpu_selection(inv)
        literal = self.literal_env(inv, visible, literal)
        child = dict(environ)
        for key, value in literal.items():
            argv += ["-e", f"{key}={value}"]
        for key, value in inv.env.by_name.items():
            argv += ["-e", key]
            child[key] = value
        argv += gpu_flags
        if inv.workdir is not None:
            argv += ["-w", inv.workdir]
        argv += inv.args
        if inv.multi_task and not any(a.startswith("--net") for a in inv.args):
            argv += ["--network", "host"]
        return Wrapped([*argv, inv.image, *inv.cmd], child)

    def user_flags(self, literal: dict[str, str]) -> list[str]:
        """Flags that keep files written through the binds the user's own."""
        return []

    def gpu_selection(self, inv: Invocation) -> tuple[list[str], list[str]]:
        """(runtime flags, CUDA_VISIBLE_DEVICES inside) for the worker's GPUs."""
        raise NotImplementedError

    def image_available(self, image: str, run: Run = subprocess.run) -> bool:
        probe = [self.name, "image", "exists" if self.name == "podman" else "inspect", image]
        try:
            done = run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def probe_args(self) -> tuple[str, ...]:
        return ("--pull=never",)

    def image_digest(self, image: str, run: Run = subprocess.run) -> str | None:
        """The image's ID (the digest of its configuration, which names its layers), as ``sha256:...``."""
        try:
            done = run([self.name, "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True,
                       check=False, timeout=60)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = (done.stdout or "").strip().splitlines()
        if done.returncode != 0 or not found or not found[0]:
            return None
        return found[0] if found[0].startswith("sha256:") else f"sha256:{found[0]}"


class Docker(OciRuntime):
    name: ClassVar[str] = "docker"

    @classmethod
    def detect(cls, image: str, which: Which = shutil.which) -> bool:
        """A docker client without a daemon (as on podman-only machines) would only fail later."""
        return not image.endswith(".sif") and cls.installed(which) and docker_daemon_present()

    def user_flags(self, literal: dict[str, str]) -> list[str]:
        uid, gid = runtimes.host_user()
        if uid == 0:
            return []
        literal.setdefault("HOME", "/tmp")  # an arbitrary uid has no writable home in most images
        return ["--user", f"{uid}:{gid}"]

    def gpu_selection(self, inv: Invocation) -> tuple[list[str], list[str]]:
        ids = list(inv.gpus.physical)
        if not ids:
            return (["--gpus", "all"], []) if inv.gpus.wanted else ([], [])
        joined = ",".join(ids)
        # docker parses --gpus as CSV: several ids need the quotes inside the value
        flag = f"device={joined}" if len(ids) == 1 else f'"device={joined}"'
        return ["--gpus", flag], [str(i) for i in range(len(ids))]


class Podman(OciRuntime):
    name: ClassVar[str] = "podman"

    @classmethod
    def detect(cls, image: str, which: Which = shutil.which) -> bool:
        return not image.endswith(".sif") and cls.installed(which)

    def user_flags(self, literal: dict[str, str]) -> list[str]:
        # SELinux hosts would deny the unlabelled binds; relabelling (:z) the user's data is worse.
        flags = ["--security-opt", "label=disable"]
        if runtimes.host_user()[0] != 0:
            flags.append("--userns=keep-id")  # rootless: files written keep the user's uid
        return flags

    def gpu_selection(self, inv: Invocation) -> tuple[list[str], list[str]]:
        ids = list(inv.gpus.physical)
        if not ids and not inv.gpus.wanted:
            return [], []
        if not nvidia_cdi_present():
            return [], ids  # no NVIDIA stack to select from: the ids stay observable
        if not ids:
            return ["--device", "nvidia.com/gpu=all"], []
        return [a for g in ids for a in ("--device", f"nvidia.com/gpu={g}")], [str(i) for i in range(len(ids))]
